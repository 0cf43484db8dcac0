"""Hostile strings in what edgeticket reads (ticket provenance and class names, device-profile fields, file
names): cleaned where they are read, so no escape code, forged line or markup reaches stdout, stderr, the JSON,
report.md, an export's metadata or the plots' text. The commands succeed; a refused one still says one clean line."""

import json
import shlex
import shutil

import pytest
import torch

from .harness import Case

HOSTILE = {
    "ansi": "\x1b[2J\x1b[31mred",
    "osc title": "\x1b]0;PWNED\x07title",
    "osc 8 link": "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07",
    "rich markup": "[bold red]LOUD[/] [link=https://evil.example]click[/link]",
    "forged lines": "x\n| forged | row |\r\nerror: fake",
    "c1 and mathtext": "\x9b2J\x85next $\\frac{$ 5$",
}
EVERYTHING = {"all at once": " ".join(HOSTILE.values())}  # for the costly paths: the cleaning is one function
LITERAL = {"rich markup": "[bold red]LOUD[/]", "all at once": "[bold red]LOUD[/]"}  # shown as written, not rendered


def hostile_ticket(harness, text: str, name: str = "t.ticket"):
    """The fixture ticket with `text` in its provenance and class names, its checksum recomputed (as an attacker
    who edits the file would)."""
    from edgeticket.ticket import payload_checksum
    payload = torch.load(harness.fixtures.folder / "in.ticket", weights_only=True)
    payload["provenance"].update(threat_model=f"none {text}", method=f"omp{text}", target="digits")
    payload["provenance"]["stages"][0]["note"] = text
    payload["class_names"] = [f"{i}{text}" for i in range(10)]
    payload["checksum"] = payload_checksum(payload)
    torch.save(payload, harness.folder / name)
    return harness.folder / name


def check_literal(kind: str, output: str) -> None:
    if kind in LITERAL:
        assert LITERAL[kind] in output.replace("\n", ""), f"markup was rendered: {output!r}"


@pytest.fixture
def figures(monkeypatch):
    """The text of every plot `report` saves."""
    from matplotlib.text import Text

    from edgeticket import report
    seen, save = [], report._save

    def recording(figure, path):
        seen.extend(t.get_text() for t in figure.findobj(Text))
        return save(figure, path)
    monkeypatch.setattr(report, "_save", recording)
    return seen


@pytest.mark.parametrize("kind", HOSTILE)
def test_inspect_shows_hostile_provenance_as_plain_text(harness, kind):
    ticket = hostile_ticket(harness, HOSTILE[kind])
    check_literal(kind, harness.accept(["inspect", str(ticket)]).stdout)
    document = json.loads(harness.accept(["inspect", str(ticket), "--json"]).stdout)
    assert "omp" in document["provenance"]["method"]


@pytest.mark.parametrize("kind", EVERYTHING)
def test_eval_and_report_write_no_hostile_string(harness, kind, figures):
    ticket = hostile_ticket(harness, EVERYTHING[kind])
    harness.accept(["eval", str(ticket), "--data", "digits", "--attack", "none"])
    result = harness.accept(["report", str(harness.folder), "--no-paper"], figures=figures)
    assert figures and (harness.folder / "report.md").exists()
    check_literal(kind, (harness.folder / "report.md").read_text())
    assert "| forged | row |" not in result.stdout.splitlines()


@pytest.mark.parametrize("kind", EVERYTHING)
def test_an_export_carries_no_hostile_string_to_its_metadata_or_eval(harness, kind):
    ticket = hostile_ticket(harness, EVERYTHING[kind])
    harness.accept(["export", str(ticket), "-o", str(harness.folder / "t.onnx")])
    harness.accept(["eval", str(harness.folder / "t.onnx"), "--data", "digits", "--attack", "none"])
    harness.accept(["bench", str(harness.folder / "t.onnx"), "--device", "ort-cpu-1t", "--runs", "2",
                    "--warmup", "0", "--seconds", "0", "--images", "16", "--json"])


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_device_profile_is_listed_as_plain_text(harness, kind):
    devices = harness.folder / "devices"
    devices.mkdir()
    profile = 'runtime = "onnxruntime"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"\n'
    (devices / "mine.toml").write_text(f"{profile}stands_for = {json.dumps(HOSTILE[kind])}\n")
    (devices / f"{HOSTILE[kind].replace('/', '')}.toml").write_text(f'{profile}stands_for = "named by its file"\n')
    (devices / f"broken{HOSTILE[kind].replace('/', '')}.toml").write_text("threads = 0\n")
    env = {"EDGETICKET_DEVICES": str(devices)}
    check_literal(kind, harness.accept(["devices"], env).stdout)
    harness.accept(["devices", "--json"], env)
    harness.accept(["bench", str(shutil.copy(harness.fixtures.folder / "model.onnx", harness.folder)), "--device",
                    "mine", "--runs", "2", "--warmup", "0", "--seconds", "0"], env)


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_file_name_is_printed_as_plain_text(harness, kind):
    ticket = hostile_ticket(harness, HOSTILE[kind], name=f"{HOSTILE[kind].replace('/', '')}.ticket")
    check_literal(kind, harness.accept(["inspect", str(ticket)]).stdout)
    harness.accept(["draw", str(ticket), "-o", str(harness.folder / "o.ticket")])


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_missing_file_with_a_hostile_name_is_one_clean_line(harness, kind):
    name = HOSTILE[kind].replace("/", "").replace("{", "(").replace("}", ")")
    harness.refuse(Case("metadata", f"inspect {shlex.quote(f'{{missing:{name}.ticket}}')}", "no such file"))
