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
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextclick.data.io import atomic_path
from nextclick.errors import DataError
from nextclick.records import RECORD, read_record

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
    best_params: dict[str, Any]
    loss_kind: str  # what the training loss measures: runs of one kind share a plot

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        final = record.get("final") or {}
        evaluated = final or record
        return cls(
            loss_kind=_loss_kind(record),
            label=f"{record.get('label', '?')} ({record.get('kind', '?')})",
            kind=record.get("kind", "?"),
            metrics=evaluated.get("metrics") or {},
            curves=evaluated.get("curves"),
            epochs=evaluated.get("epochs") or [],
            train_seconds=evaluated.get("train_seconds"),
            trials=record.get("trials") or [],
            importances=record.get("importances") or {},
            metric=record.get("metric"),
            best_params=record.get("best_params") or {},
        )


def _loss_kind(record: dict[str, Any]) -> str:
    """GRU4Rec's losses are over sampled columns; the other models' cross-entropy is over the
    catalogue (or sampled, with loss = sampled): their scales differ, so are their plots."""
    model = record.get("model_name") or "?"
    loss = (record.get("config") or {}).get("loss")
    if loss is None:
        return model
    if model == "gru4rec":
        return f"GRU4Rec {loss} (sampled columns)"
    names = {"cross-entropy": "cross-entropy over the catalogue", "sampled": "sampled softmax"}
    return names.get(loss, loss)


def expand_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Run record directories: each path that is one, and the records inside each path
    that holds records (such as a ``--run-dir``), in name order."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / RECORD).exists():
            out.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if (p / RECORD).exists()) if path.is_dir() else []
        if not inside:
            raise DataError(f"{path}: not a run record (no {RECORD} in it or in the folders "
                            "it holds)")  # fmt: skip
        out += inside
    return out


def write_report(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write ``out/index.html``, ``out/report.md`` and the plots; returns ``out``.

    Each of ``run_dirs`` is a run record directory or a directory holding such.
    """
    if not run_dirs:
        raise DataError("report: give at least one run directory")
    runs = [Run.from_record(read_record(d)) for d in expand_runs(run_dirs)]
    figures = _figures(runs)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, (_, png) in figures.items():
            (tmp / f"{name}.png").write_bytes(png)
        (tmp / "report.md").write_text(_markdown(runs, figures), encoding="utf-8")
        (tmp / "index.html").write_text(_html(runs, figures), encoding="utf-8")
    return out


ACCURACY = (*(f"recall@{k}" for k in KS), *(f"mrr@{k}" for k in KS))


def _table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """The metrics table; each cell is (text, best): the highest accuracy of its column,
    marked only where the column has at least two different values. A study run without a
    final test has no row here, only one in the studies table."""
    runs = [r for r in runs if r.metrics]
    header = ["run", *(f"Recall@{k}" for k in KS), *(f"MRR@{k}" for k in KS), "coverage@20",
              "popularity@20", "train s"]  # fmt: skip
    top = {}
    for key in ACCURACY:
        values = {_finite(r.metrics.get(key)) for r in runs} - {None}
        if len(values) > 1:
            top[key] = max(values)
    rows = []
    for run in runs:
        m = run.metrics

        def cell(key: str, m: dict[str, float] = m) -> tuple[str, bool]:
            value = _finite(m.get(key))
            if value is None:
                return ("–" if m.get(key) is None else str(m[key])), False
            return f"{value:.4f}", value == top.get(key)

        seconds = "–" if run.train_seconds is None else f"{run.train_seconds:.1f}"
        rows.append([(run.label, False), *(cell(key) for key in ACCURACY), cell("coverage@20"),
                     cell("popularity@20"), (seconds, False)])  # fmt: skip
    return header, rows


def _study_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per study: its trials by state, their summed time, and the best trial."""
    header = ["study", "trials", "complete", "pruned", "failed", "trial minutes",
              "best validation", "best parameters"]  # fmt: skip
    rows = []
    for run in runs:
        if not run.trials:
            continue
        states = [t["state"] for t in run.trials]
        minutes = sum(t.get("seconds") or 0.0 for t in run.trials) / 60
        best = _best_trial(run)
        value, params = "–", ""
        if best is not None:
            value = f"{run.metric or 'value'} {best['value']:.4f} (trial {best['number']})"
            # The study's cleaned values, for the parameters it searched (not its fixed ones)
            # and the epochs it chose on validation.
            chosen = {"n_epochs"} if best.get("best_epoch") is not None else set()
            params = ", ".join(f"{k}={v}" for k, v in run.best_params.items()
                               if k in best["params"] or k in chosen)  # fmt: skip
        # Another worker's trials can still be running when a record is written.
        running = len(states) - sum(states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL"))
        total = f"{len(states)} ({running} running)" if running else str(len(states))
        rows.append([run.label, total, str(states.count("COMPLETE")),
                     str(states.count("PRUNED")), str(states.count("FAIL")), f"{minutes:.1f}",
                     value, params or "–"])  # fmt: skip
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def _markdown(runs: Sequence[Run], figures: dict[str, tuple[str, bytes]]) -> str:
    header, cells = _table_rows(runs)
    rows = [[f"**{text}**" if best else text for text, best in row] for row in cells]
    lines = ["# nextclick report"]
    if rows:
        lines += ["", *_markdown_table(header, rows)]
    study_header, study_rows = _study_rows(runs)
    if study_rows:
        lines += ["", "## Studies", "", *_markdown_table(study_header, study_rows)]
    lines += ["", *(f"![{title}]({name}.png)" for name, (title, _) in figures.items()), ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[tuple[str, bool]]], name: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td><strong>{html.escape(text)}</strong></td>" if best
                         else f"<td>{html.escape(text)}</td>" for text, best in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f'<table class="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(runs: Sequence[Run], figures: dict[str, tuple[str, bytes]]) -> str:
    header, rows = _table_rows(runs)
    tables = _html_table(header, rows, "metrics") if rows else ""
    study_header, study_rows = _study_rows(runs)
    if study_rows:
        cells = [[(text, False) for text in row] for row in study_rows]
        tables += "<h2>Studies</h2>" + _html_table(study_header, cells, "studies")
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
td:first-child, th:first-child, .studies td:last-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1rem 1rem 0 0; vertical-align: top; }}
img {{ max-width: 760px; width: 100%; }}
</style></head>
<body><h1>nextclick report</h1>
{tables}
{images}
</body></html>
"""


def _figures(runs: Sequence[Run]) -> dict[str, tuple[str, bytes]]:
    """name -> (title, PNG bytes), only for what the records hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures: dict[str, tuple[str, bytes]] = {}
    style = _styles(runs)

    def save(name: str, title: str, fig: Any) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        figures[name] = (title, buffer.getvalue())

    with_curves = [r for r in runs if r.curves]
    if with_curves:
        for key, name in (("recall", "Recall@K"), ("mrr", "MRR@K")):
            fig, ax = plt.subplots(figsize=(8, 5.5))
            # Legend in the order of the lines at the largest K, best first.
            for run in sorted(with_curves, key=lambda r: -(r.curves or {})[key][-1]):
                assert run.curves is not None
                ax.plot(run.curves["k"], run.curves[key], marker=".", label=run.label,
                        **style[id(run)])  # fmt: skip
            ax.set_xlabel("K (length of the list)")
            ax.set_ylabel(name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9, loc="lower right" if key == "recall" else "best")
            save(f"curves_{key}", f"{name} over K", fig)
    kinds: dict[str, list[Run]] = {}
    for run in runs:
        if run.epochs:
            kinds.setdefault(run.loss_kind, []).append(run)
    if kinds:
        # One panel per kind of loss: their scales are unrelated.
        fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False)
        for ax, (kind, group) in zip(axes[0], kinds.items(), strict=True):
            for run in group:
                ax.plot([e["epoch"] for e in run.epochs], [e["loss"] for e in run.epochs],
                        marker="o", label=run.label, **style[id(run)])  # fmt: skip
            ax.set_title(kind, fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("training loss")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        save("loss", "Training loss per epoch, one panel per kind of loss", fig)
    validation = [(r, _best_trial(r)) for r in runs if r.trials]
    validation = [(r, t) for r, t in validation if t is not None and t["intermediate"]]
    if validation:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for run, trial in validation:
            steps = sorted(trial["intermediate"].items(), key=lambda kv: int(kv[0]))
            ax.plot([int(k) for k, _ in steps], [v for _, v in steps], marker="o",
                    label=f"{run.label}, trial {trial['number']}", **style[id(run)])  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(validation[0][0].metric or "validation metric")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save("validation", "Validation metric per epoch (best trial of each study)", fig)
    timed = [r for r in runs if r.train_seconds is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(timed)))
        ax.barh([r.label for r in timed], [r.train_seconds for r in timed])
        ax.invert_yaxis()
        ax.set_xlabel("training seconds")
        save("time", "Training time", fig)
    biased = [r for r in runs if "popularity@20" in r.metrics and "coverage@20" in r.metrics]
    for key, title, axis in (
        ("popularity@20", "Popularity bias", "mean normalised training popularity of a list"),
        ("coverage@20", "Coverage", "share of the catalogue ever recommended"),
    ):  # fmt: skip
        if biased:
            fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(biased)))
            ax.barh([r.label for r in biased], [r.metrics[key] for r in biased])
            ax.invert_yaxis()
            ax.set_xlabel(f"{key}: {axis}")
            save(key.split("@")[0], f"{title} of the top-20 lists", fig)
    for i, run in enumerate(r for r in runs if r.trials):
        done = _complete(run)
        pruned = [t for t in run.trials if t["state"] == "PRUNED" and t["intermediate"]]
        if done or pruned:
            fig, ax = plt.subplots(figsize=(6, 3.8))
            numbers = [t["number"] for t in done]
            values = [t["value"] for t in done]
            best = [max(values[: j + 1]) for j in range(len(values))]
            ax.scatter(numbers, values, s=12, label="complete trial")
            ax.step(numbers, best, where="post", color="C1", label="best so far")
            # A pruned trial has no value; its last report shows how far below the others
            # the pruner stopped it.
            if pruned:
                last = [t["intermediate"][max(t["intermediate"], key=int)] for t in pruned]
                ax.scatter([t["number"] for t in pruned], last, s=12, marker="x",
                           color="0.6", label="pruned (last value reported)")  # fmt: skip
            ax.set_xlabel("trial")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


_LINESTYLES = ("-", "--", ":", "-.")


def _styles(runs: Sequence[Run]) -> dict[int, dict[str, str]]:
    """id(run) -> its colour and line style, the same in every figure.

    Matplotlib's cycle has ten colours; a benchmark of every model has twelve runs, so the
    eleventh run would share the first one's line. Runs past ten keep the colours and change
    the dashes.
    """
    return {
        id(run): {"color": f"C{i % 10}", "linestyle": _LINESTYLES[i // 10 % len(_LINESTYLES)]}
        for i, run in enumerate(runs)
    }


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _complete(run: Run) -> list[dict[str, Any]]:
    return [t for t in run.trials if t["state"] == "COMPLETE" and t["value"] is not None]


def _best_trial(run: Run) -> dict[str, Any] | None:
    return max(_complete(run), key=lambda t: t["value"], default=None)
