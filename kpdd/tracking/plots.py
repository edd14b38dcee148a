"""The plots of `kpdd compare`: accuracy by dataset, training curves, accuracy against the number of traces,
and the validation accuracy of ``kpdd improve`` rounds against the round and the number of training traces.

Drawn with matplotlib's object API (``Figure``, no pyplot), so no GUI backend or global state is involved.
A row keeps one colour in every plot.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from kpdd.tracking.runs import TRAIN_LOSS, VAL_LOSS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kpdd.tracking.rows import CompareRow

DPI = 150
ACCURACY_PLOT = "accuracy_by_dataset.png"
CURVES_PLOT = "training_curves.png"
TRACES_PLOT = "accuracy_vs_traces.png"
ROUNDS_PLOT = "accuracy_vs_rounds.png"


def render_all(rows: list[CompareRow], datasets: list[str], curves: dict[str, dict[str, list]],
               out_dir: Path, rounds: dict[str, list[tuple]] | None = None) -> list[Path]:
    """Write every plot that has something to show; returns the PNG paths. ``rounds``: each ``kpdd improve``
    run's (round, training traces or None, validation accuracy) points."""
    labels, colours = row_labels(rows), row_colours(rows)
    figures = {
        ACCURACY_PLOT: accuracy_bars(rows, datasets, labels, colours) if rows else None,
        CURVES_PLOT: training_curves(rows, curves, labels, colours),
        TRACES_PLOT: accuracy_vs_traces(rows, labels, colours),
        ROUNDS_PLOT: accuracy_vs_rounds(rounds or {}),
    }
    written = []
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(out_dir / name, dpi=DPI)
            written.append(out_dir / name)
    return written


def row_labels(rows: list[CompareRow]) -> list[str]:
    """'method · student', plus the teacher, trace count or run id where rows would otherwise read the same."""
    families: dict[str, list[CompareRow]] = {}
    for row in rows:
        families.setdefault(row.label, []).append(row)
    labels = []
    for row in rows:
        family = families[row.label]
        details = []
        if len({r.teacher for r in family}) > 1:
            details.append(f"from {row.teacher or '?'}")
        if len({r.traces for r in family}) > 1:
            details.append(f"{row.traces if row.traces is not None else '?'} traces")
        labels.append(" · ".join([row.label, *details]))
    repeated = Counter(labels)
    return [f"{label} ({row.run_id[:6]})" if repeated[label] > 1 else label for label, row in zip(labels, rows)]


def row_colours(rows: list[CompareRow]) -> list[tuple[float, float, float]]:
    """One hue per method · student; its variants (more traces, another teacher) in lighter to darker shades."""
    from matplotlib import colormaps

    families = list(dict.fromkeys(row.label for row in rows))
    palette = colormaps["tab10" if len(families) <= 10 else "tab20"].colors
    colours, seen = [], Counter()
    for row in rows:
        base = palette[families.index(row.label) % len(palette)]
        size, index = sum(r.label == row.label for r in rows), seen[row.label]
        seen[row.label] += 1
        lighten = 0.6 * (size - 1 - index) / (size - 1) if size > 1 else 0.0  # the last variant is the pure hue
        colours.append(tuple(c + (1 - c) * lighten for c in base))
    return colours


def accuracy_bars(rows, datasets, labels, colours) -> Figure:
    """Grouped bars: one group per dataset (and the average), one bar per row, each with its 95 % interval."""
    from matplotlib.figure import Figure

    groups = [*datasets, "average"]
    width = 0.8 / len(rows)  # of a bar, in group units
    inches = min(18.0, max(7.0, 1.0 + len(groups) * (0.3 * len(rows) + 0.7)))  # wider with more bars
    figure = Figure(figsize=(inches, 4.8), layout="constrained")
    axes = figure.add_subplot()
    for index, (row, label, colour) in enumerate(zip(rows, labels, colours, strict=True)):
        values = [row.accuracy.get(d) for d in datasets] + [row.average]
        bounds = [row.intervals.get(d) for d in datasets] + [None]  # the average of datasets has no one interval
        drawn = [(g, v, b) for g, (v, b) in enumerate(zip(values, bounds, strict=True)) if v is not None]
        xs = [g + (index - (len(rows) - 1) / 2) * width for g, _, _ in drawn]
        heights = [100 * v for _, v, _ in drawn]
        # Error bars from the 95 % (Wilson) interval logged with each accuracy; none where it was not logged.
        below = [100 * (v - b[0]) if b else math.nan for _, v, b in drawn]
        above = [100 * (b[1] - v) if b else math.nan for _, v, b in drawn]
        bars = axes.bar(xs, heights, width * 0.92, label=label, color=colour, yerr=[below, above], capsize=3,
                        error_kw={"elinewidth": 1.0, "ecolor": "0.25"})
        if len(rows) * len(groups) <= 40:  # beyond that the numbers overlap; the table has them
            axes.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    axes.set_xticks(range(len(groups)), groups, fontsize=10)
    top = max(100 * max([*row.accuracy.values(), *(high for _, high in row.intervals.values())]) for row in rows)
    axes.set_ylim(0, min(105.0, top * 1.2 + 5))
    _finish(axes, "Accuracy by dataset", "", "accuracy (%)", len(rows))
    axes.grid(axis="x", visible=False)
    return figure


def training_curves(rows, curves, labels, colours) -> Figure | None:
    """Training loss (solid) and validation loss (dashed) by step, one colour per row."""
    from matplotlib.figure import Figure

    drawn = [(row, label, colour) for row, label, colour in zip(rows, labels, colours, strict=True)
             if any(curves.get(row.run_id, {}).values())]
    if not drawn:
        return None
    figure = Figure(figsize=(8.0, 4.8), layout="constrained")
    axes = figure.add_subplot()
    for row, label, colour in drawn:
        series = curves[row.run_id]
        if train := series.get(TRAIN_LOSS):
            axes.plot(*zip(*train, strict=True), color=colour, linewidth=1.8, label=label)
        if val := series.get(VAL_LOSS):
            axes.plot(*zip(*val, strict=True), color=colour, linewidth=1.8, linestyle="--", marker="o",
                      markersize=4, label=None if train else label)
    _finish(axes, "Training curves", "step", "loss (solid: training, dashed: validation)", len(drawn))
    return figure


def accuracy_vs_traces(rows, labels, colours) -> Figure | None:
    """Average accuracy against the number of training traces: one line per method · student (· teacher)."""
    from matplotlib.figure import Figure

    hue = {row.label: colour for row, colour in zip(rows, colours, strict=True)}  # the family's pure hue
    teachers = {row.label: {r.teacher for r in rows if r.label == row.label} for row in rows}
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row.traces is not None:
            name = row.label if len(teachers[row.label]) == 1 else f"{row.label} · from {row.teacher or '?'}"
            series.setdefault(name, []).append((row.traces, 100 * row.average))
    if not series:
        return None
    figure = Figure(figsize=(8.0, 4.8), layout="constrained")
    axes = figure.add_subplot()
    styles = ["-", "--", ":", "-."]
    for index, (name, points) in enumerate(series.items()):
        xs, ys = zip(*sorted(points), strict=True)
        family = name.split(" · from ")[0]
        axes.plot(xs, ys, color=hue[family], marker="o", markersize=7, linewidth=1.8, label=name,
                  linestyle=styles[index % len(styles)] if name != family else "-")
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    counts = [x for points in series.values() for x, _ in points]
    if min(counts) > 0 and max(counts) >= 20 * min(counts):
        axes.set_xscale("log")
    top = max(y for points in series.values() for _, y in points)
    axes.set_ylim(0, min(105.0, top * 1.2 + 5))
    _finish(axes, "Average accuracy vs number of training traces", "training traces", "average accuracy (%)",
            len(series))
    return figure


def accuracy_vs_rounds(rounds: dict[str, list[tuple]]) -> Figure | None:
    """Rejection-sampling fine-tuning: validation accuracy against the round (left) and against the number of
    training traces (right), one line per ``kpdd improve`` run."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if not rounds:
        return None
    figure = Figure(figsize=(11.0, 4.4), layout="constrained")
    by_round, by_traces = figure.subplots(1, 2)
    for index, (name, points) in enumerate(rounds.items()):
        colour = colormaps["tab10"](index % 10)
        xs, ys = [p[0] for p in points], [100 * p[2] for p in points]
        by_round.plot(xs, ys, color=colour, marker="o", linewidth=1.8, label=name)
        counted = [(p[1], 100 * p[2]) for p in points if p[1] is not None]
        if counted:
            by_traces.plot(*zip(*counted, strict=True), color=colour, marker="o", linewidth=1.8, label=name)
        for x, y in zip(xs, ys, strict=True):
            by_round.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    by_round.set_xticks(sorted({p[0] for points in rounds.values() for p in points}))
    for axes in (by_round, by_traces):
        axes.set_ylim(0, min(105.0, max(100 * p[2] for pts in rounds.values() for p in pts) * 1.2 + 5))
    _finish(by_round, "Validation accuracy by RFT round", "round (0: the starting student)",
            "validation accuracy (%)", len(rounds))
    _finish(by_traces, "… and by training traces", "training traces", "validation accuracy (%)", len(rounds))
    return figure


def _finish(axes, title: str, xlabel: str, ylabel: str, entries: int) -> None:
    axes.set_title(title, fontsize=13, fontweight="bold", loc="left")
    axes.set_xlabel(xlabel, fontsize=10)
    axes.set_ylabel(ylabel, fontsize=10)
    axes.grid(alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    # Many entries go outside, to the right, where they cannot cover the data.
    if entries > 6:
        axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.legend(fontsize=9, frameon=False, loc="best")
