"""Outputs that would destroy something or cannot be written: the input itself, /dev/null, a FIFO, a folder, a
read-only folder, a parent that is a file, a suffix that contradicts --format or the command. A missing parent is
no error: it is created (as `mkdir -p` would)."""

import pytest

from .harness import Case

# each command's output option, with {output} where the path goes
WRITERS = {
    "draw": "draw {ticket} -o {output}",
    "finetune": "finetune {ticket} --data digits --subset 20 --epochs 1 -o {output}",
    "pretrain": "pretrain --data digits --subset 20 --epochs 1 -o {output}",
    "export": "export {ticket} --format onnx -o {output}",
    "report": "report {case} --results {output}",
}
SUFFIX = {"draw": ".ticket", "finetune": ".ticket", "pretrain": ".ticket", "export": ".onnx", "report": ".md"}
# each bad output (a function of the command's suffix), and what the error line must say
BAD_OUTPUTS = {
    "/dev/null": (lambda suffix: "/dev/null", "null"),
    "a fifo": (lambda suffix: f"{{fifo:o{suffix}}}", "o"),
    "a folder": (lambda suffix: f"{{dir:o{suffix}}}", "o"),
    "a parent that is a file": (lambda suffix: f"{{empty:parent}}/o{suffix}", "parent"),
    "a read-only folder": (lambda suffix: f"{{readonly:ro}}/o{suffix}", "read-only"),
}
CASES = [Case("outputs", WRITERS[command].replace("{output}", make(SUFFIX[command])), message)
         for command in WRITERS for make, message in BAD_OUTPUTS.values()]
CASES += [
    Case("outputs", "draw {ticket} -o {ticket}", "is the input"),
    Case("outputs", "finetune {ticket} --data digits -o {ticket}", "is the input"),
    Case("outputs", "pretrain --from {ticket} --data digits -o {ticket}", "is the input"),
    Case("outputs", "export {onnx} -o {onnx}", "model.onnx"),
    Case("outputs", "export {ticket} -o {ticket} --format onnx", "is the input"),
    Case("outputs", "export {ticket} -o {case}/o.onnx --format ncnn", "but --format is ncnn"),
    Case("outputs", "export {ticket} -o {case}/o.pte --format onnx", "but --format is onnx"),
    Case("outputs", "export {ticket} -o {case}/o.ncnn --format executorch", "but --format is executorch"),
    Case("outputs", "export {ticket} -o {case}/o.txt", "cannot tell the format"),
    Case("outputs", "draw {ticket} -o {case}/o.onnx", "named like an onnx export"),
    Case("outputs", "finetune {ticket} --data digits -o {case}/o.pte", "named like an executorch export"),
    Case("outputs", "pretrain --data digits -o {case}/o.ncnn", "named like an ncnn export"),
    Case("outputs", "report {case} --results {case}/r.txt", "wants a .md path"),
    # the records eval and bench write beside the model: a folder or a FIFO there is not replaced
    Case("outputs", "eval {ticket} --data digits --attack none", "in.ticket.eval.json", make="{dir:in.ticket.eval.json}"),
    Case("outputs", "eval {ticket} --data digits --attack none", "in.ticket.eval.json",
         make="{fifo:in.ticket.eval.json}"),
    Case("outputs", "bench {onnx} --device ort-cpu-1t --runs 1 --seconds 0", "bench.json",
         make="{dir:model.onnx.ort-cpu-1t.bench.json}"),
    Case("outputs", "bench {ticket} --all-devices --out {empty:out} --runs 1 --seconds 0", "out"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_output_is_refused_and_nothing_is_written(harness, case):
    harness.refuse(case)
