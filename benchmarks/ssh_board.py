"""Remote vs local: the same exported models benched here and on a "board" over ssh, side by side.

    python benchmarks/ssh_board.py MODEL.onnx [MODEL.onnx ...] [--seconds 3] [--repeats 3]

The board is this machine behind a throwaway OpenSSH server on 127.0.0.1, with a virtualenv holding only
numpy and onnxruntime (the tests' loopback board), so the two rows should agree within noise: the runner is
the same script with the same runtime version, and the ssh path adds only the probe, the copies and the
connection to the wall time. Runs alternate local and remote, `--repeats` times each. With your own board,
bench it directly: `edgeticket bench MODEL --device board.toml`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' loopback board

from edgeticket.bench import BenchConfig  # noqa: E402
from edgeticket.bench.devices import read_profile  # noqa: E402
from edgeticket.bench.run import bench_model  # noqa: E402
from edgeticket.console import console  # noqa: E402
from edgeticket.tables import rows_table  # noqa: E402
from tests.bench.loopback import LoopbackSshd, board_venv, write_profile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported .onnx models (with a finetune target)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = BenchConfig(seconds=args.seconds)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        sshd = LoopbackSshd.start(work)
        try:
            python = board_venv(work / "board", ["onnxruntime", "numpy"])
            board = read_profile(write_profile(work / "board.toml", sshd.port, work, python, work / "board-work"))
            for model in args.models:
                for repeat in range(args.repeats):
                    for where, device in (("here", "ort-cpu-1t"), ("ssh 127.0.0.1", str(board.path))):
                        start = time.perf_counter()
                        result = bench_model(model, device, config=config)
                        wall = time.perf_counter() - start
                        rows.append([model.name, where, repeat + 1, result.runtime_version,
                                     "-" if result.accuracy is None else f"{result.accuracy:.2f}",
                                     f"{result.latency.p50_ms:.3f}", f"{result.latency.p90_ms:.3f}",
                                     f"{result.runtime_memory_mb:.0f}", f"{result.peak_memory_mb:.0f}", f"{wall:.1f}"])
        finally:
            sshd.stop()
    header = ["model", "where", "run", "onnxruntime", "Acc %", "p50 ms", "p90 ms", "runtime MB", "peak MB", "wall s"]
    rows_table("local vs ssh (loopback board: this machine)", header, rows)
    console.print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|", markup=False)
    for row in rows:
        console.print("| " + " | ".join(map(str, row)) + " |", markup=False)


if __name__ == "__main__":
    main()
