"""``nextclick report``: one self-contained HTML page (and a Markdown table) comparing runs.

It reads run records (:mod:`nextclick.records`): the metrics at K = 1/5/10/20, Recall@K and
MRR@K over K, training loss and validation metric per epoch, training time, popularity bias
and coverage, and for tuning studies the optimisation history and parameter importances.
Plots are PNG files (matplotlib), also embedded in the page.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextclick.data.io import atomic_path
from nextclick.errors import DataError
from nextclick.records import read_record

KS = (1, 5, 10, 20)


@dataclass(frozen=True)
class Run:
    """What the report shows of one record."""

    label: str
    kind: str
    metrics: dict[str, float]
    curves: dict[str, list[float]] | None
    epochs: list[dict[str, Any]]
    train_seconds: float | None
    trials: list[dict[str, Any]]
    importances: dict[str, float]
    metric: str | None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        final = record.get("final") or {}
        evaluated = final or record
        return cls(
            label=f"{record.get('label', '?')} ({record.get('kind', '?')})",
            kind=record.get("kind", "?"),
            metrics=evaluated.get("metrics") or {},
            curves=evaluated.get("curves"),
            epochs=evaluated.get("epochs") or [],
            train_seconds=evaluated.get("train_seconds"),
            trials=record.get("trials") or [],
            importances=record.get("importances") or {},
            metric=record.get("metric"),
        )


def write_report(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write ``out/index.html``, ``out/report.md`` and the plots; returns ``out``."""
    if not run_dirs:
        raise DataError("report: give at least one run directory")
    runs = [Run.from_record(read_record(d)) for d in run_dirs]
    figures = _figures(runs)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, (_, png) in figures.items():
            (tmp / f"{name}.png").write_bytes(png)
        (tmp / "report.md").write_text(_markdown(runs, figures), encoding="utf-8")
        (tmp / "index.html").write_text(_html(runs, figures), encoding="utf-8")
    return out


def _table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["run", *(f"Recall@{k}" for k in KS), *(f"MRR@{k}" for k in KS), "coverage@20",
              "popularity@20", "train s"]  # fmt: skip
    rows = []
    for run in runs:
        m = run.metrics

        def cell(key: str, m: dict[str, float] = m) -> str:
            return f"{m[key]:.4f}" if key in m else "–"

        rows.append([run.label, *(cell(f"recall@{k}") for k in KS),
                     *(cell(f"mrr@{k}") for k in KS), cell("coverage@20"), cell("popularity@20"),
                     "–" if run.train_seconds is None else f"{run.train_seconds:.1f}"])  # fmt: skip
    return header, rows


def _markdown(runs: Sequence[Run], figures: dict[str, tuple[str, bytes]]) -> str:
    header, rows = _table_rows(runs)
    lines = ["# nextclick report", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    for run in runs:
        if run.trials:
            states: dict[str, int] = {}
            for t in run.trials:
                states[t["state"]] = states.get(t["state"], 0) + 1
            summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
            lines += ["", f"{run.label}: {len(run.trials)} trials ({summary})"]
    lines += ["", *(f"![{title}]({name}.png)" for name, (title, _) in figures.items()), ""]
    return "\n".join(lines)


def _html(runs: Sequence[Run], figures: dict[str, tuple[str, bytes]]) -> str:
    header, rows = _table_rows(runs)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for title, png in figures.values()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nextclick report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1rem 1rem 0 0; }} img {{ max-width: 640px; }}
</style></head>
<body><h1>nextclick report</h1>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{images}
</body></html>
"""


def _figures(runs: Sequence[Run]) -> dict[str, tuple[str, bytes]]:
    """name -> (title, PNG bytes), only for what the records hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, tuple[str, bytes]] = {}

    def save(name: str, title: str, fig: Any) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        figures[name] = (title, buffer.getvalue())

    with_curves = [r for r in runs if r.curves]
    if with_curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for run in with_curves:
            assert run.curves is not None
            axes[0].plot(run.curves["k"], run.curves["recall"], label=run.label)
            axes[1].plot(run.curves["k"], run.curves["mrr"], label=run.label)
        for ax, name in zip(axes, ("Recall@K", "MRR@K"), strict=True):
            ax.set_xlabel("K")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        save("curves", "Recall@K and MRR@K over K", fig)
    with_epochs = [r for r in runs if r.epochs]
    if with_epochs:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for run in with_epochs:
            ax.plot([e["epoch"] for e in run.epochs], [e["loss"] for e in run.epochs], marker="o",
                    label=run.label)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save("loss", "Training loss per epoch", fig)
    validation = [(r, _best_trial(r)) for r in runs if r.trials]
    validation = [(r, t) for r, t in validation if t is not None and t["intermediate"]]
    if validation:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for run, trial in validation:
            steps = sorted(trial["intermediate"].items(), key=lambda kv: int(kv[0]))
            ax.plot([int(k) for k, _ in steps], [v for _, v in steps], marker="o",
                    label=f"{run.label}, trial {trial['number']}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(validation[0][0].metric or "validation metric")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save("validation", "Validation metric per epoch (best trial of each study)", fig)
    timed = [r for r in runs if r.train_seconds is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(timed)))
        ax.barh([r.label for r in timed], [r.train_seconds for r in timed])
        ax.set_xlabel("training seconds")
        save("time", "Training time", fig)
    biased = [r for r in runs if "popularity@20" in r.metrics and "coverage@20" in r.metrics]
    if biased:
        fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 + 0.4 * len(biased)))
        labels = [r.label for r in biased]
        axes[0].barh(labels, [r.metrics["popularity@20"] for r in biased])
        axes[0].set_xlabel("popularity@20 (mean normalised popularity of the list)")
        axes[1].barh(labels, [r.metrics["coverage@20"] for r in biased])
        axes[1].set_xlabel("coverage@20 (share of items ever recommended)")
        axes[1].set_yticks([])
        save("bias", "Popularity bias and coverage", fig)
    for i, run in enumerate(r for r in runs if r.trials):
        done = [t for t in run.trials if t["state"] == "COMPLETE"]
        if done:
            fig, ax = plt.subplots(figsize=(6, 3.8))
            numbers = [t["number"] for t in done]
            values = [t["value"] for t in done]
            best = [max(values[: j + 1]) for j in range(len(values))]
            ax.scatter(numbers, values, s=12, label="trial")
            ax.step(numbers, best, where="post", color="C1", label="best so far")
            ax.set_xlabel("trial")
            ax.set_ylabel(run.metric or "value")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            save(f"history{i}", f"Optimisation history: {run.label}", fig)
        if run.importances:
            fig, ax = plt.subplots(figsize=(6, 0.6 + 0.35 * len(run.importances)))
            names = list(run.importances)[::-1]
            ax.barh(names, [run.importances[n] for n in names])
            ax.set_xlabel("importance")
            save(f"importance{i}", f"Parameter importances: {run.label}", fig)
    return figures


def _best_trial(run: Run) -> dict[str, Any] | None:
    done = [t for t in run.trials if t["state"] == "COMPLETE" and t["value"] is not None]
    return max(done, key=lambda t: t["value"]) if done else None
