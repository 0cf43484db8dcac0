"""The host facts every bench and int8 export records: parsed from /proc/cpuinfo as each architecture writes it."""

from edgeticket.host import CpuInfo, cpu_info, parse_cpuinfo

AVX2_INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
processor\t: 1
model name\t: another core
"""
EPYC_ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9554 64-Core Processor
flags\t\t: sse avx avx2 f16c fma avx512f avx512bw avx512_bf16 avx512_vnni avx512vl
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp i8mm bf16
CPU implementer\t: 0x41
"""


def test_x86_without_vnni():
    cpu = parse_cpuinfo(AVX2_INTEL, "x86_64")
    assert cpu.model == "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz"  # the first processor's, not the last
    assert cpu.flags == ("avx2", "f16c", "fma") and cpu.x86 and not cpu.vnni and not cpu.fp16_arithmetic


def test_x86_with_avx512_vnni():
    cpu = parse_cpuinfo(EPYC_ZEN4, "x86_64")
    assert cpu.vnni and "avx512f" in cpu.flags and "avx512_bf16" in cpu.flags and not cpu.fp16_arithmetic
    assert "avx512bw" not in cpu.flags  # only the flags that change a kernel choice are kept
    assert parse_cpuinfo("flags : avx2 avx_vnni\n", "x86_64").vnni


def test_arm_features():
    cpu = parse_cpuinfo(GRAVITON, "aarch64")
    assert not cpu.x86 and cpu.fp16_arithmetic and {"asimddp", "i8mm", "bf16"} <= set(cpu.flags)
    assert cpu.model == "unknown CPU" and "aarch64" in cpu.describe()


def test_this_machine_round_trips_through_json():
    here = cpu_info()
    assert here.model and here.arch and CpuInfo.from_dict(here.as_dict()) == here
