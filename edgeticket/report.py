"""Collect eval/bench sidecars from a runs folder into one table, next to the paper's Table I, with plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import EdgeticketError
from .fileio import atomic_path, write_json, write_text

COLUMNS = ["source", "method", "pattern", "sparsity", "acc", "ece", "nll", "adv_acc", "roc_auc", "params", "macs",
           "latency_ms", "size_bytes", "onnx_acc"]


LATENCY_DEVICE = "ort-cpu-1t"  # the report's latency column; other devices are in `bench --all-devices`


def reference() -> dict:
    """The seed papers' numbers, shipped inside the package."""
    return json.loads(resources.files("edgeticket").joinpath("reference.json").read_text())


def _load(paths) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(paths)]


def collect(runs_dir: str | Path) -> list[dict]:
    """One row per evaluated torch ticket, joined with the bench and ONNX eval of its export (by ticket sha256)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise EdgeticketError(f"no such folder: {runs_dir}", hint="pass the folder that holds your runs")
    evals = _load(runs_dir.rglob("*.eval.json"))
    benches = {b["ticket_sha256"]: b for b in _load(runs_dir.rglob(f"*.{LATENCY_DEVICE}.bench.json"))
               if b.get("ticket_sha256")}
    onnx_evals = {e["ticket_sha256"]: e for e in evals if e["runtime"] == "onnxruntime"}
    rows = []
    for result in (e for e in evals if e["runtime"] == "torch"):
        prov, metrics = result["provenance"], result["metrics"]
        bench = benches.get(result["ticket_sha256"], {})
        onnx = onnx_evals.get(result["ticket_sha256"])
        rows.append({"source": prov.get("source_kind", "unknown"), "method": prov.get("method", "dense"),
                     "pattern": prov.get("pattern", "-"), "sparsity": prov.get("sparsity", 0.0),
                     "params_removed": prov.get("params_removed", 0.0), "target": result["data"],
                     "acc": metrics["accuracy"], "ece": metrics["ece"], "nll": metrics["nll"],
                     "adv_acc": metrics["adv_accuracy"], "roc_auc": metrics["ood_roc_auc"],
                     "params": result["size"]["params"], "nonzero_params": result["size"]["nonzero_params"],
                     "macs": result["size"]["macs"],
                     "latency_ms": bench.get("latency", {}).get("p50_ms"), "size_bytes": bench.get("file_size_bytes"),
                     "onnx_acc": onnx["metrics"]["accuracy"] if onnx else None, "model": result["model"]})
    if not rows:
        raise EdgeticketError(f"no evaluated tickets under {runs_dir}",
                              hint="run `edgeticket eval TICKET --data D` first (it writes TICKET.eval.json)")
    return sorted(rows, key=lambda r: (r["target"], r["method"], r["pattern"], r["source"], r["sparsity"]))


def paper_rows(arch: str = "resnet18") -> list[dict]:
    """Table I of the seed paper (OMP, ImageNet -> CIFAR-10), robust and natural."""
    table = reference()["robust_tickets_table1"]
    return [{"source": kind, "sparsity": s, **{m: table[arch][kind][m][i] for m in table[arch][kind]}}
            for kind in ("robust", "natural") for i, s in enumerate(table["sparsities"])]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points that no other point beats on both (faster and more accurate)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


def plot(rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["source"], r["method"], r["pattern"]) for r in rows}):
        line = sorted((r["sparsity"], r["acc"]) for r in rows if (r["source"], r["method"], r["pattern"]) == key)
        axis.plot(*zip(*line), marker="o", label=" ".join(key))
    axis.set(xlabel="sparsity (--sparsity)", ylabel="target accuracy (%)", title="robust vs natural tickets")
    axis.legend()
    axis.grid(alpha=0.3)
    paths.append(_save(figure, out_dir / "accuracy_vs_sparsity.png"))
    timed = [r for r in rows if r["latency_ms"] is not None]
    if timed:
        figure, axis = plt.subplots(figsize=(6, 4))
        for source in sorted({r["source"] for r in timed}):
            mine = [r for r in timed if r["source"] == source]
            axis.scatter([r["latency_ms"] for r in mine], [r["acc"] for r in mine], label=source)
        front = sorted((timed[i]["latency_ms"], timed[i]["acc"])
                       for i in pareto_front([(r["latency_ms"], r["acc"]) for r in timed]))
        axis.plot(*zip(*front), color="black", linestyle="--", label="Pareto front")
        axis.set(xlabel="p50 latency (ms, onnxruntime CPU)", ylabel="target accuracy (%)", title="accuracy vs latency")
        axis.legend()
        axis.grid(alpha=0.3)
        paths.append(_save(figure, out_dir / "accuracy_vs_latency.png"))
    return paths


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_lines(rows: list[dict]) -> list[list[str]]:
    from .tables import human_bytes, human_count
    return [[r["source"], r["method"], r["pattern"], _fmt(r["sparsity"]), _fmt(r["acc"]), _fmt(r["ece"], 4),
             _fmt(r["nll"], 3), _fmt(r["adv_acc"]), _fmt(r["roc_auc"]), human_count(r["nonzero_params"]),
             human_count(r["macs"]), _fmt(r["latency_ms"], 3), human_bytes(r["size_bytes"]) if r["size_bytes"] else "-",
             _fmt(r["onnx_acc"])] for r in rows]


HEADER = ["source", "method", "pattern", "sparsity", "Acc %", "ECE", "NLL", "Adv-Acc %", "ROC-AUC", "params",
          "MACs", "p50 ms", "size", "ONNX Acc %"]
PAPER_HEADER = ["source", "sparsity", "Acc %", "ECE", "NLL", "Adv-Acc %", "ROC-AUC"]


def paper_lines(arch: str = "resnet18") -> list[list[str]]:
    return [[r["source"], _fmt(r["sparsity"], 4), _fmt(r["accuracy"]), _fmt(r["ece"], 4), _fmt(r["nll"], 4),
             _fmt(r["adv_accuracy"]), _fmt(r["ood_roc_auc"])] for r in paper_rows(arch)]


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(line) + " |" for line in lines])


@dataclass
class Report:
    rows: list[dict]
    markdown: Path
    json: Path
    plots: list[Path]
    failed: list[dict]


def failed_cells(runs_dir: Path) -> list[dict]:
    """Sweep cells whose result.json says they failed, with their errors."""
    return [r for r in _load(runs_dir.rglob("result.json")) if r.get("status") == "failed"]


def write_report(runs_dir: str | Path) -> Report:
    runs_dir = Path(runs_dir)
    rows = collect(runs_dir)
    failed = failed_cells(runs_dir)
    plots = plot(rows, runs_dir)
    targets = ", ".join(sorted({r["target"] for r in rows}))
    text = "\n\n".join([
        f"# edgeticket report: {runs_dir}", f"Target: {targets}. Latency: onnxruntime CPU p50 at batch 1.",
        markdown_table(HEADER, table_lines(rows)),
        "## The paper's Table I (ResNet-18, ImageNet -> CIFAR-10, OMP; sparsity = fraction of weights removed)",
        markdown_table(PAPER_HEADER, paper_lines()),
        *(["## Failed cells\n\n" + markdown_table(["cell", "error"], [[f["cell"], f["error"]] for f in failed])]
          if failed else []),
        *[f"![{p.stem}]({p.name})" for p in plots]]) + "\n"
    write_text(text, runs_dir / "report.md")
    write_json({"rows": rows, "failed": failed, "paper_table1_resnet18": paper_rows()}, runs_dir / "report.json")
    return Report(rows, runs_dir / "report.md", runs_dir / "report.json", plots, failed)
