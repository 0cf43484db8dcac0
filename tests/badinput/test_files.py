"""Input files that are missing, empty, a folder, random bytes, truncated, flipped, the wrong shape, a hostile
pickle, a foreign ONNX or a corrupt .resume: every command that reads one refuses it in one line."""

from dataclasses import replace

import pytest

from .harness import Case

# each command that reads a ticket or checkpoint, with {input} where the file goes
TICKET_READERS = {
    "inspect": "inspect {input}",
    "draw": "draw {input} -o {case}/o.ticket",
    "finetune": "finetune {input} -o {case}/o.ticket --data digits --subset 20 --epochs 1",
    "export": "export {input} -o {case}/o.onnx",
    "eval": "eval {input} --data digits --attack none",
    "gap": "gap --model {input}",
    "pretrain": "pretrain --from {input} -o {case}/o.ticket --data digits --subset 20 --epochs 1",
    "bench": "bench {input} --all-devices --runs 1 --seconds 0",
}
# each bad file, and what the error line must say
BAD_TICKETS = {
    "missing": ("{missing:x.ticket}", "x.ticket"),
    "empty": ("{empty:x.ticket}", "x.ticket"),
    "a folder": ("{dir:x.ticket}", "x.ticket"),
    "random bytes": ("{random:x.ticket}", "x.ticket"),
    "truncated": ("{truncated:in.ticket}", "truncated-in.ticket"),
    "flipped tensor byte": ("{flipped:in.ticket}", "flipped-in.ticket"),
    "hostile pickle": ("{hostile:x.ticket}", "x.ticket"),
    "a fifo": ("{fifo:x.ticket}", "x.ticket"),
}
ONNX_READERS = {
    "eval": "eval {input} --data digits --attack none",
    "bench": "bench {input} --device ort-cpu-1t --runs 1 --warmup 0 --seconds 0",
}
BAD_ONNX = {
    "missing": ("{missing:x.onnx}", "x.onnx"),
    "empty": ("{empty:x.onnx}", "x.onnx"),
    "a folder": ("{dir:x.onnx}", "x.onnx"),
    "random bytes": ("{random:x.onnx}", "x.onnx"),
    "truncated": ("{truncated:model.onnx}", "truncated-model.onnx"),
    "flipped weight byte": ("{flipped:model.onnx}", "flipped-model.onnx"),
    "a ticket named .onnx": ("{ticket:x.onnx}", "x.onnx"),
    "a hostile pickle named .onnx": ("{hostile:x.onnx}", "x.onnx"),
}

CASES = [Case("files", reader.replace("{input}", path), message) for reader in TICKET_READERS.values()
         for path, message in BAD_TICKETS.values()]
CASES += [Case("files", reader.replace("{input}", path), message) for reader in ONNX_READERS.values()
          for path, message in BAD_ONNX.values()]
CASES += [
    Case("files", "export {foreign} -o {case}/o.onnx", "foreign.onnx"),
    Case("files", "draw {foreign} -o {case}/o.ticket", "foreign.onnx"),
    Case("files", "finetune {foreign} -o {case}/o.ticket --data digits", "foreign.onnx"),
    Case("files", "inspect {foreign}", "foreign.onnx"),
    Case("files", "eval {foreign} --data digits --attack none", "foreign.onnx"),
    Case("files", "draw {state} --arch resnet18 -o {case}/o.ticket", "shape"),  # wrong shapes
    Case("files", "draw {state} --arch small_vgg -o {case}/o.ticket", "small_vgg"),
    Case("files", "finetune {ticket} -o {case}/o.ticket --data digits --subset 20 --epochs 1",
         "o.ticket.resume", files={"o.ticket.resume": "not a resume file"}),
    Case("files", "pretrain -o {case}/o.ticket --data digits --subset 20 --epochs 1", "o.ticket.resume",
         files={"o.ticket.resume": "not a resume file"}),
    Case("files", "sweep {missing:s.toml}", "s.toml"),
    Case("files", "sweep {empty:s.toml}", "s.toml"),
    Case("files", "sweep {dir:s.toml}", "s.toml"),
    Case("files", "sweep {random:s.toml}", "s.toml"),
    Case("files", "sweep {fifo:s.toml}", "s.toml"),
    Case("files", "report {missing:runs}", "runs"),
    Case("files", "report {ticket}", "is a file: report reads a folder of runs"),
    Case("files", "inspect {dir:d}", "is a folder, not a checkpoint or ticket file"),
    Case("files", "report {case}", "eval.json", files={"t.eval.json": "{not json"}),
    Case("files", "bench {onnx} --device {missing:p.toml}", "p.toml"),
    Case("files", "bench {onnx} --device {random:p.toml}", "p.toml"),
    Case("files", "bench {onnx} --device {empty:p.toml}", "p.toml"),
    Case("files", "draw {ticket} --device {dir:p.toml} -o {case}/o.ticket", "p.toml"),
]

# a sample of the same refusals under --json: one JSON document {"error", "hint"} on stdout, nothing on stderr
CASES += [replace(case, family="json", args=f"{case.args} --json") for case in CASES[::8]]

@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_input_file_is_refused(harness, case):
    harness.refuse(case)
