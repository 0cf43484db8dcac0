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
