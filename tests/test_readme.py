"""The README's Commands block is what a new user types first: it must run as written, in order."""

import shlex
import time
from pathlib import Path

import pytest

from edgeticket.cli import app

REPO = Path(__file__).resolve().parent.parent
OUTPUT_OPTIONS = ("-o", "--out")


def commands_block(readme: str) -> list[str]:
    """The lines of the first bash block under '## Commands'."""
    section = readme.split("\n## Commands\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def is_slow(line: str) -> bool:
    return "# slow" in line


def test_every_step_reads_only_what_an_earlier_step_wrote():
    """Each line is one edgeticket command (no shell syntax, no placeholders), and every runs/ path it reads
    was written by a line above it: the defect of a block whose bench came before the finetune it needs."""
    written: list[str] = []
    lines = commands_block((REPO / "README.md").read_text())
    assert len(lines) >= 15
    for line in lines:
        args = shlex.split(line, comments=True)
        assert args[0] == "edgeticket" and not {"|", "[", "]", "<", ">"} & set("".join(args[1:])), line
        outputs = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg in OUTPUT_OPTIONS}
        for arg in args[1:]:
            if arg.startswith("runs/") and arg not in outputs and arg != "runs/":
                assert any(arg == path for path in written), f"{arg!r} is read before a step writes it: {line}"
        written += outputs


@pytest.mark.slow
def test_the_readme_commands_run_in_order(tmp_path, monkeypatch, runner):
    """Every step but those marked slow (the demo and sweep have their own end-to-end tests), in a fresh folder
    with the repository's examples/, in process (one torch import instead of twenty)."""
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))  # the latency table goes here, not to ~/.cache
    for line in commands_block((REPO / "README.md").read_text()):
        if is_slow(line):
            continue
        began = time.perf_counter()
        result = runner.invoke(app, shlex.split(line, comments=True)[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        print(f"{time.perf_counter() - began:6.1f}s  {line[:100]}")
