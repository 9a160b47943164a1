"""End-of-run artefacts: PNG plots from metrics.jsonl and a report.md that shows them.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
this works on headless machines and never touches the user's matplotlib state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (an empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_plots(metrics_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Draw loss.png (train & val), lr.png and throughput.png; returns {title: path}."""
    # matplotlib takes a second to import: only at the end of a run, when plots are drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[tuple[str, list[dict[str, Any]], str]]] = {
        "loss": [("train loss", train, "loss"), ("val loss", val, "val_loss")],
        "lr": [("learning rate", train, "lr")],
        "throughput": [("samples/s", train, "samples_per_s")],
    }
    paths: dict[str, Path] = {}
    for name, lines in series.items():
        fig = Figure(figsize=(6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for label, recs, key in lines:
            pts = [(r["step"], r[key]) for r in recs if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        if name == "loss" and any(r.get("loss", 0) > 0 for r in train):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:  # a legend of nothing warns
            ax.legend()
        fig.tight_layout()
        paths[name] = out_dir / f"{name}.png"
        fig.savefig(paths[name])
    return paths


def write_report(run_dir: str | Path, summary: dict[str, Any], plots: dict[str, Path]) -> Path:
    """report.md: the run summary as a table, then every plot (relative links)."""
    run_dir = Path(run_dir)
    lines = ["# Training report", "", "| | |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        lines.append(f"| {key} | {value} |")
    lines.append("")
    for name, path in plots.items():
        rel = path.relative_to(run_dir) if path.is_relative_to(run_dir) else path
        lines += [f"## {name}", "", f"![{name}]({rel.as_posix()})", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    log.info("Report: %s", path)
    return path
