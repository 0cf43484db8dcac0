"""Negative, zero, NaN, infinite and huge values for every numeric option, and unknown names for every choice:
each refused in one line that names the option, before any work."""

from dataclasses import replace

import pytest

from .harness import Case

HUGE = "1e400"        # past float's range: inf after parsing
HUGE_INT = str(2 ** 64)  # past int64: torch, numpy and the OS would overflow
# a command line each option is tried on, and its values that must be refused (zero where zero makes no sense)
NUMBERS = {
    "draw {ticket} -o {case}/o.ticket": {
        "--sparsity": ["-0.1", "1", "nan", "inf", HUGE],
        "--round-to": ["0", "-8", HUGE_INT],
        "--max-latency-ms": ["0", "-5", "nan", "inf"],
        "--subset": ["0", "-1", HUGE_INT],
        "--rate": ["0", "-0.2", "1", "nan", "inf"],
        "--epochs": ["0", "-1", HUGE_INT],
        "--lr": ["0", "-0.01", "nan", "inf"],
        "--steps": ["0", "-3", HUGE_INT],
        "--seed": ["-1", HUGE_INT],
    },
    "finetune {ticket} -o {case}/o.ticket --data digits": {
        "--subset": ["0", "-1", HUGE_INT],
        "--epochs": ["0", "-1", HUGE_INT],
        "--lr": ["0", "-0.05", "nan", "inf", HUGE],
        "--batch-size": ["0", "-64", HUGE_INT],
        "--steps": ["0", "-1", HUGE_INT],
        "--seed": ["-1", HUGE_INT],
    },
    "pretrain -o {case}/o.ticket --data digits": {
        "--subset": ["0", "-1"],
        "--epochs": ["0", "-1", HUGE_INT],
        "--lr": ["0", "nan", "inf"],
        "--batch-size": ["0", HUGE_INT],
        "--image-size": ["0", "-28", HUGE_INT],
        "--seed": ["-1", HUGE_INT],
    },
    "bench {onnx} --device ort-cpu-1t": {
        "--threads": ["0", "-1", HUGE_INT],
        "--runs": ["0", "-1", HUGE_INT],
        "--warmup": ["-1", HUGE_INT],
        "--seconds": ["-1", "nan", "inf", HUGE],
        "--images": ["0", "-1", HUGE_INT],
    },
    "eval {ticket} --data digits": {
        "--attack-steps": ["0", "-1", HUGE_INT],
        "--adv-images": ["0", "-1", HUGE_INT],
        "--ood-images": ["0", "-1"],
    },
}
# text options with a fixed set of names (or a grammar): each with a value that is not one
CHOICES = {
    "draw {ticket} -o {case}/o.ticket": {"--method": "omq", "--pattern": "channels", "--scope": "local",
                                         "--on": "sideways", "--device": "ort-gpu-9t", "--arch": "resnet999",
                                         "--source-kind": "adversarial", "--attack": "l3:1.0"},
    "draw {ticket} -o {case}/o.ticket --method imp": {"--data": "imagenet-21k"},
    "finetune {ticket} -o {case}/o.ticket": {"--data": "cifar-1000", "--mode": "last-k:x", "--adv": "linf:-1",
                                             "--device": "tpu"},
    "pretrain -o {case}/o.ticket": {"--arch": "resnet999", "--data": "cifar-1000", "--adv": "l2:nan",
                                    "--device": "cuda:x"},
    "eval {ticket}": {"--data": "cifar-1000", "--ood": "not-a-set", "--attack": "pgd:8/255"},
    "export {ticket} -o {case}/o.onnx": {"--format": "tflite9", "--data": "cifar-1000"},
    "bench {onnx}": {"--device": "ort-gpu-9t", "--data": "cifar-1000", "--input-shape": "1,a,28,28"},
    "gap --model {ticket}": {"--source": "cifar-1000", "--target": "not-a-set"},
    "inspect {state}": {"--arch": "resnet999"},
}

CASES = [Case("values", f"{line} {option} {value}", option.lstrip("-").replace("-", " ").split()[0])
         for line, options in NUMBERS.items() for option, values in options.items() for value in values]
CASES += [Case("choices", f"{line} {option} {value}", value) for line, options in CHOICES.items()
          for option, value in options.items()]
CASES += [
    Case("choices", "eval {ticket} --attack noise:0.25", "--attack takes none, linf:EPS or l2:EPS"),
    Case("values", "pretrain -o {case}/o.ticket --adv l2:0", "radius of 0"),  # natural training labelled robust
    Case("values", "pretrain -o {case}/o.ticket --adv noise:0", "radius of 0"),
    Case("values", "finetune {ticket} -o {case}/o.ticket --adv l2:nan", "bad threat model"),
    Case("values", "finetune {ticket} -o {case}/o.ticket --adv linf:inf", "bad threat model"),
    Case("values", "pretrain -o {case}/o.ticket --image-size 0", "--image-size 0 is not a size in pixels"),
    Case("values", "draw {ticket} -o {case}/o.ticket --round-to 100000", "--round-to 100000 leaves every layer whole"),
    Case("values", "bench {onnx} --seconds nan", "nan is not a finite number"),
    Case("values", "draw {ticket} -o {case}/o.ticket --sparsity inf", "inf is not a finite number"),
    Case("choices", "draw {state} --arch 'nope\nexported onnx fp32 -> ok' -o {case}/o.ticket", "unknown"),
]

# a sample of the same refusals under --json: one JSON document {"error", "hint"} on stdout, nothing on stderr
CASES += [replace(case, family="json", args=f"{case.args} --json") for case in CASES[::6]]

@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_value_is_refused_naming_the_option(harness, case):
    harness.refuse(case)
