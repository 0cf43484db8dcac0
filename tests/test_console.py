import os
import warnings

from edgeticket.console import native_output_captured


def test_native_output_is_captured_and_descriptors_restored(capfd, monkeypatch):
    monkeypatch.delenv("EDGETICKET_DEBUG", raising=False)
    with native_output_captured():
        os.write(1, b"pnnx chatter on fd 1\n")
        os.write(2, b"cpuinfo chatter on fd 2\n")
        warnings.warn("deprecated", FutureWarning)
    os.write(1, b"result\n")
    out, err = capfd.readouterr()
    assert out == "result\n" and "chatter" not in err and "deprecated" not in err


def test_debug_lets_native_output_through(capfd, monkeypatch):
    monkeypatch.setenv("EDGETICKET_DEBUG", "1")
    with native_output_captured():
        os.write(2, b"visible\n")
    assert "visible" in capfd.readouterr().err


def edgeticket(*args, cwd=None):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "edgeticket", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def test_markup_and_escape_codes_from_a_ticket_are_printed_as_text(small_checkpoint, tmp_path):
    """A provenance field with `[/]`, an OSC 8 hyperlink and a clear-screen code: shown as text, never run."""
    from edgeticket.models.checkpoints import load_checkpoint
    ticket = load_checkpoint(small_checkpoint, "small_resnet")
    ticket.provenance.source_file = "[/]\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\x1b[2J[bold]x"
    ticket.save(tmp_path / "[/]odd.ticket")
    result = edgeticket("inspect", tmp_path / "[/]odd.ticket")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "[/]" in result.stdout and "[bold]x" in result.stdout


def test_errors_are_one_line_of_text_or_one_json_document(tmp_path):
    result = edgeticket("inspect", tmp_path / "[/]missing\x1b[2J.ticket")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "[/]missing" in result.stderr and "\x1b" not in result.stderr
    result = edgeticket("inspect", tmp_path / "missing.ticket", "--json")
    import json
    assert result.returncode == 1 and json.loads(result.stdout)["error"].startswith("no such file")


def test_flags_show_no_value_type_in_help():
    result = edgeticket("draw", "--help")
    assert result.returncode == 0 and "--rewind" in result.stdout and "<bool>" not in result.stdout
