"""`kpdd compare`: one table and up to four plots over the evaluated runs of an MLflow experiment.

Which runs make a row: every FINISHED run that logged ``accuracy/<dataset>`` metrics (``accuracy/average`` names
no dataset), grouped by its command run (the nearest run, itself or above, tagged ``kpdd.command``) and its method,
student and teacher (the nearest such tags, itself or above). So an ``eval`` command makes one row whether it logs
accuracy on its parent run, on one child run, or on one child per dataset, and a ``demo`` that evaluates several
methods makes one row each (whose run is the method's ``compile`` run, which carries the headline too).
A row's other figures (``traces/count`` or the ``train_size`` param, ``train/time_s``, the ``train/loss``
curve) come from the first run that has them: the row's own runs, then the rest of its command run (stages of
another method or student excepted), then the runs above the command.

``kpdd improve`` runs add a plot of their validation accuracy against the round and the training traces.
``kpdd compile`` runs that optimised their teacher add a line each: the teacher program's val score before and
after optimisation, with its 95 % interval, n and trials (and whether the optimizer gave up).
The plots are written to ``out_dir`` and logged, with the table, to a new ``compare`` run in the experiment.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.config import save_config
from kpdd.errors import ConfigError, KpddError
from kpdd.tracking.plots import render_all
from kpdd.tracking.rows import CompareRow
from kpdd.tracking.runs import (
    ACCURACY_AVERAGE,
    ACCURACY_PREFIX,
    CI_HIGH_PREFIX,
    CI_LOW_PREFIX,
    COMMAND,
    DEFAULT_EXPERIMENT,
    METHOD,
    OPTIMIZE_AFTER,
    OPTIMIZE_BEFORE,
    PARAM_LIMIT,
    STAGE,
    STUDENT,
    TEACHER,
    TRACES_COUNT,
    TRAIN_LOSS,
    TRAIN_SIZE_PARAM,
    TRAIN_TIME,
    VAL_LOSS,
    command_run,
    log_records_table,
    resolve_tracking_uri,
)

PARENT = "mlflow.parentRunId"
RFT_ACCURACY, RFT_TRACES = "rft/val_accuracy", "rft/training_traces"  # logged by kpdd improve, step = round
IDENTITY = (METHOD, STUDENT, TEACHER)


@dataclass(frozen=True)
class CompareResult:
    rows: list[CompareRow]
    datasets: list[str]
    table: str  # plain text, as `kpdd compare` prints it
    plots: list[Path]
    run_id: str  # the compare run that holds the plots and the table
    tracking_uri: str
    experiment: str


def compare(experiment: str = DEFAULT_EXPERIMENT, run_ids: list[str] | None = None,
            out_dir: str | Path = "kpdd-runs/compare", tracking_uri: str | None = None) -> CompareResult:
    """Compare the evaluated runs of ``experiment`` (or those under ``run_ids``): a table, PNG plots, a run."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = ", ".join(repr(e.name) for e in client.search_experiments()) or "none"
        raise ConfigError(f"no MLflow experiment {experiment!r} in {uri} (experiments there: {known}); "
                          f"pass --experiment or --tracking-uri")
    tree = RunTree(_all_runs(client, found.experiment_id))
    rows = tree.rows(run_ids)
    rounds = _improve_rounds(client, tree, run_ids)
    optimised = _optimised_teachers(tree, run_ids)
    if not rows and not rounds and not optimised:
        which = f"runs {', '.join(run_ids)}" if run_ids else f"experiment {experiment!r}"
        raise KpddError(f"no finished runs with accuracy/<dataset> metrics under {which} in {uri}: "
                        f"run `kpdd eval` or `kpdd demo` first")
    datasets = dataset_columns(rows)
    table = (format_table(rows, datasets) if rows else "") + format_rounds(rounds) + format_optimised(optimised)
    table = table.lstrip()
    curves = {row.run_id: _curves(client, row.curve_run_id) for row in rows if row.curve_run_id}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_all(rows, datasets, curves, out_dir, rounds)

    config = {"experiment": experiment, "run_ids": run_ids or [], "out_dir": str(out_dir)}
    save_config(config, out_dir)
    with command_run("compare", config, experiment=experiment, tracking_uri=uri) as run:
        mlflow.log_param("compared_runs", ",".join(row.run_id for row in rows)[: PARAM_LIMIT])
        mlflow.log_text(table, "comparison.txt")
        log_records_table([_table_record(row, datasets) for row in rows], "comparison.json")
        for plot in plots:
            mlflow.log_artifact(str(plot), "plots")
    return CompareResult(rows, datasets, table, plots, run.info.run_id, uri, experiment)


class RunTree:
    """The runs of one experiment with their parent links, and the rule that turns them into rows."""

    def __init__(self, runs: list[Any]):
        self.runs = {run.info.run_id: run for run in runs}
        self.children: dict[str, list[str]] = {}
        for run in sorted(runs, key=lambda r: r.info.start_time or 0):
            if parent := run.data.tags.get(PARENT):
                self.children.setdefault(parent, []).append(run.info.run_id)

    def lineage(self, run_id: str) -> Iterator[str]:
        """The run, its parent, and so on up to the top-level run."""
        seen = set()
        while run_id in self.runs and run_id not in seen:
            seen.add(run_id)
            yield run_id
            run_id = self.runs[run_id].data.tags.get(PARENT)

    def tag(self, run_id: str, key: str) -> str | None:
        return next((self.runs[r].data.tags[key] for r in self.lineage(run_id) if key in self.runs[r].data.tags), None)

    def command_of(self, run_id: str) -> str:
        chain = list(self.lineage(run_id))
        return next((r for r in chain if COMMAND in self.runs[r].data.tags), chain[-1])

    def stages(self, command_id: str) -> list[str]:
        """The command run and every run below it, without descending into nested command runs."""
        found, queue = [], [command_id]
        while queue:
            run_id = queue.pop(0)
            found.append(run_id)
            queue += [c for c in self.children.get(run_id, []) if COMMAND not in self.runs[c].data.tags]
        return found

    def rows(self, run_ids: list[str] | None = None) -> list[CompareRow]:
        for run_id in run_ids or []:
            if run_id not in self.runs:
                raise ConfigError(f"run {run_id!r} is not in this experiment: check --runs (ids from `mlflow ui`)")
        wanted = set(run_ids or [])
        groups: dict[tuple, list[str]] = {}
        for run_id, run in self.runs.items():
            evaluated = any(key.startswith(ACCURACY_PREFIX) for key in run.data.metrics)
            if run.info.status != "FINISHED" or not evaluated:
                continue
            if wanted and wanted.isdisjoint(self.lineage(run_id)):
                continue
            identity = tuple(self.tag(run_id, key) for key in IDENTITY)
            groups.setdefault((self.command_of(run_id), identity), []).append(run_id)
        rows = [self._row(command_id, identity, members) for (command_id, identity), members in groups.items()]
        return sorted(rows, key=lambda row: (row.method or "", row.student or "", row.teacher or "",
                                             -1 if row.traces is None else row.traces, row.run_id))

    def _row(self, command_id: str, identity: tuple, members: list[str]) -> CompareRow:
        accuracy: dict[str, float] = {}
        intervals: dict[str, tuple[float, float]] = {}
        for run_id in sorted(members, key=lambda r: self.runs[r].info.start_time or 0):  # the latest value wins
            metrics = self.runs[run_id].data.metrics
            accuracy |= {k.removeprefix(ACCURACY_PREFIX): v for k, v in metrics.items()
                         if k.startswith(ACCURACY_PREFIX) and k != ACCURACY_AVERAGE}
            intervals |= {dataset: (metrics[CI_LOW_PREFIX + dataset], metrics[CI_HIGH_PREFIX + dataset])
                          for dataset in accuracy if CI_LOW_PREFIX + dataset in metrics
                          and CI_HIGH_PREFIX + dataset in metrics}
        related = self._related(command_id, identity, members)
        traces = self._first(related, metric=TRACES_COUNT)
        if traces is None:
            traces = _number(self._first(related, param=TRAIN_SIZE_PARAM))
        return CompareRow(
            run_id=self._lowest_common_run(members),
            method=identity[0], student=identity[1], teacher=identity[2], accuracy=accuracy,
            traces=None if traces is None else int(traces),
            train_time_s=self._first(related, metric=TRAIN_TIME),
            curve_run_id=next((r for r in related if TRAIN_LOSS in self.runs[r].data.metrics), None),
            intervals=intervals,
        )

    def _lowest_common_run(self, run_ids: list[str]) -> str:
        """The lowest run that is, or is above, every one of ``run_ids``: the row's run id in the table."""
        others = [set(self.lineage(r)) for r in run_ids[1:]]
        return next(r for r in self.lineage(run_ids[0]) if all(r in lineage for lineage in others))

    def _related(self, command_id: str, identity: tuple, members: list[str]) -> list[str]:
        """Where a row's figures are looked for, nearest first (see the module docstring)."""
        same = [r for r in self.stages(command_id) if r not in members and all(
            self.tag(r, key) in (None, value) for key, value in zip(IDENTITY, identity, strict=True))]
        above = list(self.lineage(command_id))[1:]
        return members + same + above

    def _first(self, run_ids: list[str], metric: str | None = None, param: str | None = None):
        for run_id in run_ids:
            data = self.runs[run_id].data
            if metric in data.metrics:
                return data.metrics[metric]
            if param in data.params:
                return data.params[param]
        return None


def _improve_rounds(client, tree: RunTree, run_ids: list[str] | None) -> dict[str, list[tuple]]:
    """Each finished ``kpdd improve`` run's (or ``improve`` stage's) rounds:
    {label: [(round, training traces or None, accuracy)]}."""
    found = {}
    for run_id, run in tree.runs.items():
        improve = run.data.tags.get(COMMAND) == "improve" or run.data.tags.get(STAGE) == "improve"  # or a stage
        if not improve or RFT_ACCURACY not in run.data.metrics:
            continue
        if run.info.status != "FINISHED" or run_ids and set(run_ids).isdisjoint(tree.lineage(run_id)):
            continue
        accuracy = {m.step: m.value for m in client.get_metric_history(run_id, RFT_ACCURACY)}
        traces = {m.step: m.value for m in client.get_metric_history(run_id, RFT_TRACES)}
        label = " · ".join(p for p in (run.data.tags.get(METHOD), run.data.tags.get(STUDENT), run_id[:8]) if p)
        found[label] = [(step, traces.get(step), accuracy[step]) for step in sorted(accuracy)]
    return found


def _optimised_teachers(tree: RunTree, run_ids: list[str] | None) -> dict[str, dict[str, float]]:
    """Each ``optimise`` stage's val scores: {label: {before, after, n, trials, gave_up}}; a stage whose optimizer
    gave up (its command ended with an error) is shown too, since its trials are what tells why."""
    found = {}
    for run_id, run in sorted(tree.runs.items(), key=lambda item: item[1].info.start_time or 0):
        metrics = run.data.metrics
        if run.data.tags.get(STAGE) != "optimise" or OPTIMIZE_AFTER not in metrics or \
                run.info.status not in ("FINISHED", "FAILED"):
            continue
        if run_ids and set(run_ids).isdisjoint(tree.lineage(run_id)):
            continue
        label = " · ".join(p for p in (tree.tag(run_id, METHOD), tree.tag(run_id, TEACHER),
                                       run.data.params.get("optimizer"), run_id[:8]) if p)
        found[label] = {"before": metrics[OPTIMIZE_BEFORE], "after": metrics[OPTIMIZE_AFTER],
                        "n": metrics.get("optimize/n", 0), "trials": metrics.get("optimize/trials", 0),
                        "gave_up": run.info.status == "FAILED"}
    return found


def format_optimised(optimised: dict[str, dict[str, float]]) -> str:
    """One line per optimised teacher: its val score unoptimised and optimised, with 95 % intervals ('' without)."""
    from kpdd.eval.harness import wilson_interval

    def score(percent: float, n: int) -> str:
        low, high = wilson_interval(round(percent * n / 100), n) if n else (math.nan, math.nan)
        return f"{percent:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"

    lines = [f"optimise {label}: teacher program val score {score(f['before'], int(f['n']))} unoptimised, "
             f"{score(f['after'], int(f['n']))} optimised (n={int(f['n'])}, {int(f['trials'])} trials"
             f"{'; the optimizer gave up' if f.get('gave_up') else ''})"
             for label, f in optimised.items()]
    return "".join(f"\n{line}" for line in lines)


def _number(text: str | None) -> float | None:
    """A numeric param, or None for a missing or non-numeric one (e.g. 'None': the whole split)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _all_runs(client, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += page
        if not (token := page.token):
            return runs


def _curves(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``train/loss`` and ``train/val_loss`` of one run as (step, value) pairs in step order."""
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in (TRAIN_LOSS, VAL_LOSS)}


def dataset_columns(rows: list[CompareRow]) -> list[str]:
    """The evaluation datasets in their usual order, then any others (user files) by name."""
    from kpdd.data.loaders import EVAL_DATASETS

    seen = {dataset for row in rows for dataset in row.accuracy}
    return [d for d in EVAL_DATASETS if d in seen] + sorted(seen - set(EVAL_DATASETS))


def format_table(rows: list[CompareRow], datasets: list[str]) -> str:
    """A plain-text table (rich, no colour): one line per row, accuracy in percent, '-' where a figure was not
    logged."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    caption = ("average: over the datasets each run evaluated"
               if any(len(row.accuracy) < len(datasets) for row in rows) else None)
    table = Table(box=box.SIMPLE_HEAD, caption=caption, caption_justify="left", pad_edge=False, show_edge=False)
    for index, name in enumerate(["run", "method", "student", "teacher", "traces", "train time", *datasets,
                                  "average"]):
        table.add_column(name, justify="right" if index >= 4 else "left", no_wrap=True)
    for row in rows:
        table.add_row(row.run_id[:8], row.method or "-", row.student or "-", row.teacher or "-",
                      "-" if row.traces is None else str(row.traces), format_duration(row.train_time_s),
                      *(_percent(row.accuracy.get(d)) for d in datasets), _percent(row.average))
    console = Console(width=10_000, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    console.print(table)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines() if line.strip())


def format_rounds(rounds: dict[str, list[tuple]]) -> str:
    """The ``kpdd improve`` runs' validation accuracy per round, one line per run ('' without any)."""
    lines = [f"improve {label}: " + ", ".join(
        f"round {r} {100 * accuracy:.1f}%" + ("" if traces is None else f" ({int(traces)} traces)")
        for r, traces, accuracy in points) for label, points in rounds.items()]
    return "".join(f"\n{line}" for line in lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table_record(row: CompareRow, datasets: list[str]) -> dict[str, Any]:
    return {"run_id": row.run_id, "method": row.method, "student": row.student, "teacher": row.teacher,
            "traces": row.traces, "train_time_s": row.train_time_s,
            **{f"accuracy/{d}": row.accuracy.get(d) for d in datasets}, ACCURACY_AVERAGE: row.average}
