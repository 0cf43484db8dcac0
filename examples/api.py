"""edgeticket from Python, end to end on the offline demo data in under a minute on a laptop CPU:
pretrain a small source on Fashion-MNIST, draw a 50% channel ticket, finetune it on digits, evaluate it,
export it to ONNX and bench it in onnxruntime.   Run: python examples/api.py [OUT_DIR]"""

import sys
from pathlib import Path

import edgeticket as et

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/api")
out.mkdir(parents=True, exist_ok=True)

source = et.pretrain("small_resnet", "fashion-mnist", subset=2000, epochs=2, output=out / "source.ticket")
ticket = et.draw(source, method="omp", pattern="channel", sparsity=0.5)   # `source` is left as it was
tuned = et.finetune(ticket, "digits", subset=300, epochs=15, output=out / "t50-digits.ticket")
result = et.evaluate(out / "t50-digits.ticket", "digits", attack="linf:8/255", attack_steps=10, adv_images=200)
export = et.export(out / "t50-digits.ticket", out / "t50.onnx")
bench = et.bench(out / "t50.onnx", data="digits", runs=50, seconds=0.5)

p = tuned.provenance
print(f"ticket: {p.achieved_sparsity:.0%} of channels removed, {p.params_after} of {p.params_before} parameters left")
print(f"digits: accuracy {result.metrics.accuracy:.2f}%, ECE {result.metrics.ece:.4f}, "
      f"Adv-Acc {result.metrics.adv_accuracy:.2f}% ({result.note})")
print(f"onnx: max |onnxruntime - torch| = {export.value:.2e}; p50 {bench.latency.p50_ms:.3f} ms, "
      f"accuracy in onnxruntime {bench.accuracy:.2f}%")
print("stages:", " -> ".join(s.stage for s in p.stages))
