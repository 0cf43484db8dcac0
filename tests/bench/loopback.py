"""A throwaway OpenSSH server on 127.0.0.1 and a "board" virtualenv with only numpy and a runtime: what the ssh
tests and benchmarks/ssh_board.py bench against, where there is no board at hand."""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgeticket.bench.transport import die_with_parent

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def board_venv(folder: Path, packages: list[str]) -> Path:
    """A virtualenv that sees only `packages`: this machine's installs of them, linked into its site-packages
    (instant and offline, and the same versions as the host's runner uses)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    for name in packages:
        distribution = importlib.metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files if file.parts[0] != ".."}:  # not its scripts
            (site / top).symlink_to(Path(distribution.locate_file(top)).resolve())
    return folder / "bin" / "python"


@dataclass
class LoopbackSshd:
    """sshd on a free 127.0.0.1 port with throwaway host and client keys in `folder`; the known_hosts it
    writes is ssh-keyscan's output, exactly as edgeticket's hint tells a user to make it."""
    folder: Path
    port: int
    process: subprocess.Popen

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.folder / "client_key"

    @classmethod
    def start(cls, folder: Path) -> "LoopbackSshd":
        keygen(folder / "host_key")
        keygen(folder / "client_key")
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        port = free_port()
        (folder / "sshd_config").write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
            f"PidFile {folder / 'sshd.pid'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}", "StrictModes no",
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation wants it
        log = open(folder / "sshd.log", "wb")  # a file, not a pipe nobody reads: sshd never blocks on it
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")],
                                   stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}") from None
                time.sleep(0.05)
        scan = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True, text=True,
                              check=True)
        (folder / "known_hosts").write_text(scan.stdout)
        return cls(folder, port, process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def write_profile(path: Path, port: int, folder: Path, python: Path | str, workdir: Path,
                  runtime: str = "onnxruntime", **ssh) -> Path:
    """A remote profile for a loopback sshd whose keys are in `folder`; `ssh` overrides or adds keys of its
    [ssh] table (None drops one)."""
    table = {"host": "127.0.0.1", "port": port, "user": getpass.getuser(), "identity": str(folder / "client_key"),
             "known_hosts": str(folder / "known_hosts"), "python": str(python), "workdir": str(workdir)}
    table = {key: value for key, value in {**table, **ssh}.items() if value is not None}
    provider = {"onnxruntime": "cpu", "ncnn": "cpu", "executorch": "xnnpack"}[runtime]
    path.write_text(f'runtime = "{runtime}"\nprovider = "{provider}"\nthreads = 1\nprecision = "fp32"\n'
                    'stands_for = "this machine, over ssh"\n[ssh]\n'
                    + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items()))
    return path
