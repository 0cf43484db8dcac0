"""Collect eval/bench sidecars from a runs folder into one table, next to the paper's Table I, with plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats

from .errors import EdgeticketError
from .runtimes import reference_runtime
from .fileio import atomic_path, check_output, read_text, write_json, write_text
from .text import clean, one_line

LATENCY_DEVICE = "ort-cpu-1t"  # the accuracy-vs-latency plot's device; the tables show every benched one


def reference() -> dict:
    """The seed papers' numbers, shipped inside the package."""
    return json.loads(resources.files("edgeticket").joinpath("reference.json").read_text())


def read_json(path: Path) -> dict:
    """An eval/bench record or a sweep's config, its strings cleaned (`text.clean`): report.md, the plots and the
    terminal get no escape code or line break from a file."""
    try:
        return clean(json.loads(read_text(path)))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgeticketError(f"{path} is not readable JSON ({type(error).__name__})",
                              hint="delete it, or re-run the command that wrote it") from None


def current_cells(runs_dir: Path) -> set[Path] | None:
    """In a sweep folder, the cells of its current config (results.jsonl); None elsewhere."""
    listing = runs_dir / "results.jsonl"
    if not listing.exists():
        return None
    return {runs_dir / json.loads(line)["cell"] for line in listing.read_text().splitlines() if line.strip()}


def finetune_seed(provenance: dict) -> int | None:
    stages = [s for s in provenance.get("stages", []) if s.get("stage") == "finetune"]
    return stages[-1].get("seed") if stages else None


def collect(runs_dir: str | Path, all_cells: bool = False) -> list[dict]:
    """One row per evaluated model: torch tickets joined with their ONNX eval and every bench of their exports (by
    ticket sha256); ONNX models evaluated without their ticket get rows of their own. In a sweep folder only the
    current config's cells count, unless `all_cells`."""
    runs_dir = Path(runs_dir)
    if runs_dir.is_file():
        raise EdgeticketError(f"{runs_dir} is a file: report reads a folder of runs (their .eval.json and "
                              ".bench.json records)", hint=f"pass its folder: edgeticket report {runs_dir.parent}")
    if not runs_dir.is_dir():
        raise EdgeticketError(f"no such folder: {runs_dir}", hint="pass the folder that holds your runs")
    cells = None if all_cells else current_cells(runs_dir)
    evals = [(path, read_json(path)) for path in sorted(runs_dir.rglob("*.eval.json"))
             if cells is None or any(parent in cells for parent in path.parents)]
    latency: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for path in sorted(runs_dir.rglob("*.bench.json")):
        bench = read_json(path)
        if bench.get("ticket_sha256"):
            latency.setdefault(bench["ticket_sha256"], {})[bench["device"]] = bench["latency"]["p50_ms"]
            sizes.setdefault(bench["ticket_sha256"], bench.get("file_size_bytes"))
    torch_tickets = {e["ticket_sha256"] for _, e in evals if e["runtime"] == "torch"}
    reference = reference_runtime().name
    onnx_evals = {e["ticket_sha256"]: e for _, e in evals if e["runtime"] == reference}
    rows = []
    for path, result in evals:
        if result["runtime"] != "torch" and result["ticket_sha256"] in torch_tickets:
            continue  # shown as the ONNX Acc column of its ticket's row
        prov, metrics, sha = result["provenance"], result["metrics"], result["ticket_sha256"]
        onnx = onnx_evals.get(sha) if result["runtime"] == "torch" else result
        rows.append({"source": prov.get("source_kind", "unknown"), "method": prov.get("method", "dense"),
                     "pattern": prov.get("pattern", "-"), "sparsity": prov.get("sparsity", 0.0),
                     "seed": finetune_seed(prov), "params_removed": prov.get("params_removed", 0.0),
                     "target": result["data"], "runtime": result["runtime"],
                     "acc": metrics["accuracy"], "ece": metrics["ece"], "nll": metrics["nll"],
                     "adv_acc": metrics["adv_accuracy"], "roc_auc": metrics["ood_roc_auc"],
                     "at_chance": metrics.get("at_chance", False),
                     "params": result["size"].get("params"), "nonzero_params": result["size"].get("nonzero_params"),
                     "macs": result["size"].get("macs"), "latency_ms": latency.get(sha, {}),
                     "size_bytes": sizes.get(sha) or result["size"].get("file_size_bytes"),
                     "onnx_acc": onnx["metrics"]["accuracy"] if onnx else None, "model": result["model"],
                     "file": str(path.relative_to(runs_dir)).removesuffix(".eval.json")})
    if not rows:
        raise EdgeticketError(f"no evaluated models under {runs_dir}",
                              hint="run `edgeticket eval MODEL --data D` first (it writes MODEL.eval.json)")
    patterns = (sweep_config(runs_dir) or {}).get("patterns", [])
    if len(patterns) > 1:
        rows = dense_under_each_pattern(rows, patterns)
    return sorted(rows, key=lambda r: (r["target"], r["method"], r["pattern"], r["source"], r["sparsity"],
                                       r["seed"] if r["seed"] is not None else -1, r["file"]))


def sweep_config(runs_dir: Path) -> dict | None:
    """A sweep folder's config.json (its grid, recipe hash and edgeticket commit); None elsewhere."""
    path = runs_dir / "config.json"
    return read_json(path) if path.exists() else None


def dense_under_each_pattern(rows: list[dict], patterns: list[str]) -> list[dict]:
    """A sweep runs OMP at sparsity 0 once, under its first pattern: the same dense ticket starts every pattern's
    curve, so it is summarized and paired under each pattern where that pattern has no dense row of its own.
    The copies are marked `shared`: the per-model table and the latency plot show each model once."""
    def point(row: dict, pattern: str) -> tuple:
        return row["target"], row["method"], row["source"], row["seed"], pattern

    dense = {point(r, r["pattern"]) for r in rows if r["sparsity"] == 0}
    return rows + [{**r, "pattern": pattern, "shared": True} for r in rows
                   if r["sparsity"] == 0 and r["pattern"] == patterns[0] for pattern in patterns[1:]
                   if point(r, pattern) not in dense]


GROUP = ("target", "source", "method", "pattern", "sparsity")
SUMMARY_METRICS = ("acc", "ece", "nll", "adv_acc", "roc_auc")


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std and the Student-t interval of the mean (infinite from one value)."""
    mean, std = mean_std(values)
    n = len(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n) if n > 1 else math.inf
    return mean, std, mean - half, mean + half


def verdict(n: int, low: float, high: float, first: str, second: str) -> str:
    """What an interval of `first` minus `second` says: a claim only where it excludes zero."""
    return ("one seed: no interval" if n == 1 else f"{first} better" if low > 0 else
            f"{second} better" if high < 0 else "interval spans 0")


def seed_summary(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of each metric over the seeds of every grid point."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    return [{**dict(zip(GROUP, key)), "seeds": len(members),
             **{m: mean_std([r[m] for r in members]) for m in SUMMARY_METRICS
                if all(r[m] is not None for r in members)}}
            for key, members in groups.items()]


def paired_differences(rows: list[dict], baseline: str = "natural", confidence: float = 0.95) -> list[dict]:
    """Accuracy of each other source minus the baseline's, paired by seed at the same grid point, with a
    Student-t interval over the seeds: the spread that decides whether a claim stands."""
    accuracy = {(r["target"], r["method"], r["pattern"], r["sparsity"], r["source"], r["seed"]): r["acc"]
                for r in rows if r["seed"] is not None}
    out = []
    for point in sorted({key[:4] for key in accuracy}, key=str):
        for source in sorted({key[4] for key in accuracy} - {baseline}):
            seeds = sorted(key[5] for key in accuracy
                           if key[:5] == (*point, source) and (*point, baseline, key[5]) in accuracy)
            if not seeds:
                continue
            mean, std, low, high = t_interval(
                [accuracy[(*point, source, s)] - accuracy[(*point, baseline, s)] for s in seeds], confidence)
            out.append({**dict(zip(("target", "method", "pattern", "sparsity"), point)), "source": source,
                        "baseline": baseline, "seeds": len(seeds), "mean": mean, "std": std, "low": low,
                        "high": high, "verdict": verdict(len(seeds), low, high, source, baseline)})
    return out


def paper_rows(arch: str = "resnet18") -> list[dict]:
    """Table I of the seed paper (OMP, ImageNet -> CIFAR-10), robust and natural."""
    table = reference()["robust_tickets_table1"]
    return [{"source": kind, "sparsity": s, **{m: table[arch][kind][m][i] for m in table[arch][kind]}}
            for kind in ("robust", "natural") for i, s in enumerate(table["sparsities"])]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points that no other point beats on both (faster and more accurate)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


def plot(rows: list[dict], summary: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in sorted({(g["source"], g["method"], g["pattern"]) for g in summary}):
        line = sorted((g["sparsity"], *g["acc"]) for g in summary if (g["source"], g["method"], g["pattern"]) == key)
        x, mean, std = zip(*line)
        axis.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=" ".join(key))
    seeds = max(g["seeds"] for g in summary)
    axis.set(xlabel="sparsity (--sparsity)", ylabel="target accuracy (%)",
             title="robust vs natural tickets" + (f" (mean and std over {seeds} seeds)" if seeds > 1 else ""))
    axis.legend()
    axis.grid(alpha=0.3)
    paths.append(_save(figure, out_dir / "accuracy_vs_sparsity.png"))
    timed = [r for r in rows if LATENCY_DEVICE in r["latency_ms"] and not r.get("shared")]
    if timed:
        figure, axis = plt.subplots(figsize=(6, 4))
        for source in sorted({r["source"] for r in timed}):
            mine = [r for r in timed if r["source"] == source]
            axis.scatter([r["latency_ms"][LATENCY_DEVICE] for r in mine], [r["acc"] for r in mine], label=source)
        points = [(r["latency_ms"][LATENCY_DEVICE], r["acc"]) for r in timed]
        front = sorted(points[i] for i in pareto_front(points))
        axis.plot(*zip(*front), color="black", linestyle="--", label="Pareto front")
        axis.set(xlabel=f"p50 latency (ms, {LATENCY_DEVICE})", ylabel="target accuracy (%)",
                 title="accuracy vs latency")
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


def _spread(pair: tuple[float, float] | None, digits: int = 2) -> str:
    return "-" if pair is None else f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def devices_of(rows: list[dict]) -> list[str]:
    return sorted({device for r in rows for device in r["latency_ms"]})


def rows_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Every evaluated model; a p50 column per benched device; accuracy at chance is flagged."""
    from .tables import human_bytes, human_count
    devices = devices_of(rows)
    header = ["source", "method", "pattern", "sparsity", "seed", "Acc %", "ECE", "NLL", "Adv-Acc %", "ROC-AUC",
              "params", "MACs", "size", "ONNX Acc %", *[f"p50 ms {d}" for d in devices], "file"]
    lines = [[r["source"], r["method"], r["pattern"], _fmt(r["sparsity"]), _fmt(r["seed"]),
              _fmt(r["acc"]) + (" (chance)" if r["at_chance"] else ""), _fmt(r["ece"], 4), _fmt(r["nll"], 3),
              _fmt(r["adv_acc"]), _fmt(r["roc_auc"]),
              human_count(r["nonzero_params"]) if r["nonzero_params"] is not None else "-",
              human_count(r["macs"]) if r["macs"] is not None else "-",
              human_bytes(r["size_bytes"]) if r["size_bytes"] else "-", _fmt(r["onnx_acc"]),
              *[_fmt(r["latency_ms"].get(d), 3) for d in devices], r["file"]] for r in rows if not r.get("shared")]
    return header, lines


SUMMARY_HEADER = ["source", "method", "pattern", "sparsity", "seeds", "Acc %", "Adv-Acc %", "ECE", "NLL", "ROC-AUC"]
PAIRED_HEADER = ["method", "pattern", "sparsity", "difference", "seeds", "mean (points)", "std", "95% interval",
                 "verdict"]


def summary_table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    return SUMMARY_HEADER, [[g["source"], g["method"], g["pattern"], _fmt(g["sparsity"]), str(g["seeds"]),
                             _spread(g.get("acc")), _spread(g.get("adv_acc")), _spread(g.get("ece"), 4),
                             _spread(g.get("nll"), 3), _spread(g.get("roc_auc"), 3)] for g in summary]


def paired_table(differences: list[dict]) -> tuple[list[str], list[list[str]]]:
    return PAIRED_HEADER, [[d["method"], d["pattern"], _fmt(d["sparsity"]), f"{d['source']} - {d['baseline']}",
                            str(d["seeds"]), f"{d['mean']:+.2f}", f"{d['std']:.2f}",
                            f"[{d['low']:+.2f}, {d['high']:+.2f}]" if math.isfinite(d["high"]) else "-",
                            d["verdict"]] for d in differences]


PAPER_TITLE = "The paper's Table I (ResNet-18, ImageNet -> CIFAR-10, OMP; sparsity = fraction of weights removed)"
PAPER_HEADER = ["source", "sparsity", "Acc %", "ECE", "NLL", "Adv-Acc %", "ROC-AUC"]


def paper_table(arch: str = "resnet18") -> tuple[list[str], list[list[str]]]:
    return PAPER_HEADER, [[r["source"], _fmt(r["sparsity"], 4), _fmt(r["accuracy"]), _fmt(r["ece"], 4),
                           _fmt(r["nll"], 4), _fmt(r["adv_accuracy"]), _fmt(r["ood_roc_auc"])]
                          for r in paper_rows(arch)]


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    """Cells are written whole (a pipe inside one is escaped), never truncated."""
    def cell(text: str) -> str:
        return one_line(text).replace("|", "\\|")
    return "\n".join(["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(map(cell, line)) + " |" for line in lines])


@dataclass
class Report:
    rows: list[dict]
    summary: list[dict]       # per grid point, over seeds
    differences: list[dict]   # each source minus natural, paired by seed
    markdown: Path
    json: Path
    plots: list[Path]
    failed: list[dict]
    paper: bool = True
    sweep: dict | None = None  # a sweep folder's config.json: grid, recipe hash, edgeticket version and commit

    @property
    def seeds(self) -> int:
        return max((g["seeds"] for g in self.summary), default=0)

    def sections(self) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
        """(title, table) in reading order; the CLI prints them, report.md writes them."""
        targets = ", ".join(sorted({r["target"] for r in self.rows}))
        out = [(f"Every evaluated model on {targets}", rows_table(self.rows))]
        if self.seeds > 1:
            out += [(f"Mean ± std over seeds (sample std; {self.seeds} seeds at most)", summary_table(self.summary)),
                    ("Accuracy difference to natural, paired by seed (95% Student-t interval over seeds)",
                     paired_table(self.differences))]
        elif self.differences:
            out.append(("Accuracy difference to natural: one seed, so no interval; run a sweep with several seeds "
                        "(examples/paper_small.toml) before drawing a conclusion", paired_table(self.differences)))
        if self.failed:
            out.append(("Failed cells", (["cell", "error"], [[f["cell"], f["error"]] for f in self.failed])))
        if self.paper:
            out.append((PAPER_TITLE, paper_table()))
        return out


def failed_cells(runs_dir: Path, all_cells: bool = False) -> list[dict]:
    """Sweep cells whose result.json says they failed, with their errors."""
    cells = None if all_cells else current_cells(runs_dir)
    return [r for r in (read_json(p) for p in sorted(runs_dir.rglob("result.json"))
                        if cells is None or p.parent in cells) if r.get("status") == "failed"]


def write_report(runs_dir: str | Path, paper: bool = True, all_cells: bool = False) -> Report:
    runs_dir = Path(runs_dir)
    rows = collect(runs_dir, all_cells)
    summary = seed_summary(rows)
    report = Report(rows, summary, paired_differences(rows), runs_dir / "report.md", runs_dir / "report.json",
                    plot(rows, summary, runs_dir), failed_cells(runs_dir, all_cells), paper, sweep_config(runs_dir))
    text = "\n\n".join([f"# edgeticket report: {runs_dir}", *([provenance_line(report.sweep)] if report.sweep else []),
                         "Latency: p50 at batch 1 per benched device profile. A row flagged (chance) is no better "
                         "than guessing: its other metrics describe a constant, not a classifier.",
                         *[f"## {title}\n\n{markdown_table(*table)}" for title, table in report.sections()],
                         *[f"![{p.stem}]({p.name})" for p in report.plots]]) + "\n"
    write_text(text, report.markdown)
    write_json({"sweep": report.sweep, "rows": rows, "summary": summary, "differences": report.differences,
                "failed": report.failed,
                **({"paper_table1_resnet18": paper_rows()} if paper else {})}, report.json)
    return report


def provenance_line(sweep: dict) -> str:
    code = sweep.get("edgeticket", {})
    commits = code.get("commits") or [code.get("commit") or "unrecorded"]
    where = (f"at commit `{commits[0]}`" if len(commits) == 1 else
             "resumed across commits " + ", ".join(f"`{c}`" for c in commits) + " (cells may come from each)")
    return f"Sweep recipe `{sweep.get('recipe', 'unrecorded')}`, edgeticket {code.get('version', '?')} {where}."


def verdict_sentence(difference: dict) -> str:
    """One plain sentence per grid point: the difference, its interval, and whether the interval excludes zero."""
    where = f"{difference['pattern']} {difference['sparsity']:g}"
    what = f"{difference['source']} - {difference['baseline']}"
    if not math.isfinite(difference["high"]):
        return f"- {where}: {what} = {difference['mean']:+.2f} points from one seed: no interval, no claim."
    interval = f"{difference['mean']:+.2f} points, 95% interval [{difference['low']:+.2f}, {difference['high']:+.2f}]"
    if difference["low"] > 0 or difference["high"] < 0:
        better = difference["source"] if difference["low"] > 0 else difference["baseline"]
        return f"- {where}: {what} = {interval}: the interval excludes zero, {better} tickets are more accurate."
    return f"- {where}: {what} = {interval}: the interval spans zero, no difference shown."


def results_path(path: str | Path) -> Path:
    """Checked before any work: the results are written as PATH (.md) and PATH with .json."""
    path = Path(path)
    if path.suffix != ".md":
        raise EdgeticketError(f"--results wants a .md path, got {path.name}", hint="e.g. docs/results/paper_small.md")
    check_output(path)
    check_output(path.with_suffix(".json"))
    return path


def write_results(report: Report, path: str | Path) -> tuple[Path, Path]:
    """The citable part of a sweep's report, as PATH (markdown) and PATH with .json: recipe hash and commit,
    mean ± std per grid point, paired differences with intervals, one sentence per point, and each seed's
    accuracies; no per-model table, plots or local paths, so it stays small and can be committed."""
    path = results_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep = {k: v for k, v in (report.sweep or {}).items() if k not in ("out", "cache")}
    settings = {k: v for k, v in sweep.items() if k not in ("edgeticket", "recipe")}
    sections = [f"# {path.stem}: mean ± std over seeds, and differences paired by seed",
                provenance_line(report.sweep) if report.sweep else "Not a sweep folder: no recipe or commit recorded.",
                f"Settings: `{json.dumps(settings, sort_keys=True)}`" if settings else "",
                f"## Mean ± std over seeds (sample std)\n\n{markdown_table(*summary_table(report.summary))}",
                f"## Accuracy difference, paired by seed (95% Student-t interval)\n\n"
                f"{markdown_table(*paired_table(report.differences))}",
                "## In words\n\n" + "\n".join(verdict_sentence(d) for d in report.differences)
                if report.differences else ""]
    if report.failed:
        sections.append("## Failed cells\n\n" + markdown_table(["cell", "error"],
                                                                 [[f["cell"], f["error"]] for f in report.failed]))
    write_text("\n\n".join(filter(None, sections)) + "\n", path)
    json_path = path.with_suffix(".json")
    seeds = [{k: r[k] for k in ("target", "source", "method", "pattern", "sparsity", "seed", "acc", "adv_acc")}
             for r in report.rows if not r.get("shared")]
    write_json({"sweep": sweep or None, "summary": report.summary, "differences": report.differences, "seeds": seeds,
                "failed": [{"cell": f["cell"], "error": f["error"]} for f in report.failed]}, json_path)
    return path, json_path
