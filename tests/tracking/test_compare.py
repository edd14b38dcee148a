"""`compare` over a real MLflow store with runs shaped like the commands': the rows, the table, the plots."""

import re

import mlflow
import pytest
from matplotlib import colormaps
from matplotlib.container import ErrorbarContainer
from PIL import Image

from kpdd.cli import main
from kpdd.errors import ConfigError, KpddError
from kpdd.tracking import (
    METHOD,
    STUDENT,
    TEACHER,
    TRACES_COUNT,
    TRAIN_LOSS,
    TRAIN_TIME,
    VAL_LOSS,
    accuracy_key,
    command_run,
    compare,
    stage_run,
)
from kpdd.tracking.compare import format_duration

KPDD_COT = {"gsm8k": 0.25, "svamp": 0.5, "asdiv": 0.6, "multiarith": 0.875}
COT = {"gsm8k": 0.125, "svamp": 0.3, "multiarith": 0.4}
DEMO = {"pot": 0.35, "socratic": 0.45}
TAB10 = [tuple(round(255 * c) for c in colour) for colour in colormaps["tab10"].colors]


def log_experiment() -> dict[str, str]:
    """A compile (stages: traces, finetune, eval), an eval with one child per dataset, a demo evaluating two
    methods in one command, a failed eval and a run without accuracy. Returns the run ids by name."""
    ids = {}
    student = {STUDENT: "smollm2-135m"}
    with command_run("compile", tags={METHOD: "kpdd-cot", TEACHER: "gold", **student}) as run:
        ids["compile"] = run.info.run_id
        with stage_run("traces"):
            mlflow.log_metric(TRACES_COUNT, 120)
        with stage_run("finetune") as finetune:
            ids["finetune"] = finetune.info.run_id
            for step in range(10):
                mlflow.log_metric(TRAIN_LOSS, 2.0 - 0.15 * step, step=step)
            for step in (3, 6, 9):
                mlflow.log_metric(VAL_LOSS, 2.1 - 0.12 * step, step=step)
            mlflow.log_metric(TRAIN_TIME, 300.0)
        with stage_run("eval") as evaluated:
            ids["compile/eval"] = evaluated.info.run_id
            mlflow.log_metrics({accuracy_key(d): v for d, v in KPDD_COT.items()})
    with command_run("eval", {"train_size": 50, "datasets": list(COT)}, tags={METHOD: "cot", **student}) as run:
        ids["eval"] = run.info.run_id
        for dataset, value in COT.items():
            with stage_run("eval", dataset=dataset):
                mlflow.log_metric(accuracy_key(dataset), value)
    with command_run("demo", tags=student) as run:
        ids["demo"] = run.info.run_id
        for method, value in DEMO.items():
            with stage_run("eval", tags={METHOD: method}):
                mlflow.log_metric(accuracy_key("gsm8k"), value)
    with pytest.raises(RuntimeError), command_run("eval", tags={METHOD: "direct"}):
        mlflow.log_metric(accuracy_key("gsm8k"), 0.99)
        raise RuntimeError("engine died")
    with command_run("traces", tags={METHOD: "socratic"}):
        mlflow.log_metric(TRACES_COUNT, 7)
    return ids


def table_cells(table: str) -> dict[str, dict[str, str]]:
    """The printed table as {method: {column: cell}}."""
    header, _, *lines = table.splitlines()
    columns = re.split(r"\s{2,}", header.strip())
    rows = [dict(zip(columns, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines
            if not line.startswith("average:")]
    return {row["method"]: row for row in rows}


def colours_in(path) -> set[tuple[int, int, int]]:
    image = Image.open(path).convert("RGB")
    return {colour for _, colour in image.getcolors(maxcolors=image.width * image.height)}


def test_compare_rows_follow_the_commands(tmp_path):
    ids = log_experiment()
    result = compare(out_dir=tmp_path / "plots")

    rows = {row.method: row for row in result.rows}
    assert list(rows) == ["cot", "kpdd-cot", "pot", "socratic"]  # the failed eval and the traces run add none
    assert rows["kpdd-cot"].accuracy == KPDD_COT and rows["cot"].accuracy == COT
    assert {m: rows[m].accuracy for m in DEMO} == {m: {"gsm8k": v} for m, v in DEMO.items()}
    assert rows["kpdd-cot"].run_id == ids["compile/eval"] and rows["cot"].run_id == ids["eval"]
    assert (rows["kpdd-cot"].traces, rows["kpdd-cot"].train_time_s) == (120, 300.0)
    assert (rows["cot"].traces, rows["cot"].train_time_s) == (50, None)  # from the train_size param
    assert rows["kpdd-cot"].curve_run_id == ids["finetune"] and rows["cot"].curve_run_id is None
    assert rows["kpdd-cot"].teacher == "gold" and rows["pot"].student == "smollm2-135m"
    assert result.datasets == ["gsm8k", "svamp", "asdiv", "multiarith"]


def test_a_student_run_with_headline_metrics_is_its_row_and_its_average_no_dataset(tmp_path):
    """As ``kpdd demo`` logs: the eval stage's figures, and the same headline (with the average) on the student's
    command run, where the runs table shows them without expanding it."""
    from kpdd.tracking.results import log_headline
    from kpdd.eval.harness import DatasetScore

    scores = {"gsm8k": DatasetScore("gsm8k", total=4, correct=1), "svamp": DatasetScore("svamp", total=2, correct=1)}
    with command_run("compile", tags={METHOD: "kpdd-pot", TEACHER: "gold"}) as run:
        with stage_run("eval") as evaluated:
            mlflow.log_metrics({accuracy_key(d): s.accuracy for d, s in scores.items()})
        log_headline(scores, [])
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged["accuracy/average"] == 0.375 and logged["accuracy/gsm8k"] == 0.25
    assert 0 < logged["accuracy_ci_low/gsm8k"] < 0.25 < logged["accuracy_ci_high/gsm8k"]
    assert mlflow.MlflowClient().get_run(evaluated.info.run_id).info.run_name == "kpdd-pot · eval"
    [row] = compare(out_dir=tmp_path).rows
    assert row.run_id == run.info.run_id and row.accuracy == {"gsm8k": 0.25, "svamp": 0.5}


def test_compare_table_shows_the_logged_metrics(tmp_path):
    log_experiment()
    cells = table_cells(compare(out_dir=tmp_path).table)
    for method, accuracy in {"kpdd-cot": KPDD_COT, "cot": COT, "pot": {"gsm8k": DEMO["pot"]}}.items():
        for dataset in ("gsm8k", "svamp", "asdiv", "multiarith"):
            expected = f"{100 * accuracy[dataset]:.1f}" if dataset in accuracy else "-"
            assert cells[method][dataset] == expected, (method, dataset)
        assert cells[method]["average"] == f"{100 * sum(accuracy.values()) / len(accuracy):.1f}"
    assert cells["kpdd-cot"]["traces"] == "120" and cells["kpdd-cot"]["train time"] == "5.0 min"
    assert cells["cot"]["train time"] == "-" and cells["kpdd-cot"]["teacher"] == "gold"


def test_compare_plots_are_drawn_and_logged_to_a_compare_run(tmp_path):
    log_experiment()
    result = compare(out_dir=tmp_path / "plots")

    names = {path.name: path for path in result.plots}
    assert set(names) == {"accuracy_by_dataset.png", "training_curves.png", "accuracy_vs_traces.png"}
    for path in result.plots:
        width, height = Image.open(path).size
        assert width >= 7 * 150 and height == int(4.8 * 150)
        assert len(colours_in(path)) > 50  # text, bars and lines, not a blank canvas
    # Rows are cot, kpdd-cot, pot, socratic: tab10 colours 0-3, the same in every plot.
    assert set(TAB10[:4]) <= colours_in(names["accuracy_by_dataset.png"])
    assert TAB10[1] in colours_in(names["training_curves.png"])  # only kpdd-cot was fine-tuned here
    assert {TAB10[0], TAB10[1]} <= colours_in(names["accuracy_vs_traces.png"])

    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["kpdd.command"] == "compare"
    logged = {artifact.path for artifact in client.list_artifacts(result.run_id, "plots")}
    assert logged == {f"plots/{name}" for name in names}
    table = mlflow.load_table("comparison.json", run_ids=[result.run_id])
    assert sorted(table["accuracy/svamp"].dropna()) == pytest.approx(sorted([KPDD_COT["svamp"], COT["svamp"]]))


def test_compare_runs_option_keeps_the_rows_under_those_runs(tmp_path):
    ids = log_experiment()
    result = compare(run_ids=[ids["compile"], ids["demo"]], out_dir=tmp_path)
    assert [row.method for row in result.rows] == ["kpdd-cot", "pot", "socratic"]
    assert not (tmp_path / "accuracy_vs_traces.png").exists() or result.rows[0].traces == 120


def test_compare_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="no MLflow experiment 'nope' .*--experiment"):
        compare(experiment="nope", out_dir=tmp_path)
    with command_run("traces"):
        mlflow.log_metric(TRACES_COUNT, 3)
    with pytest.raises(KpddError, match="no finished runs with accuracy/<dataset> metrics .*kpdd eval"):
        compare(out_dir=tmp_path)
    with pytest.raises(ConfigError, match="run 'abc' is not in this experiment"):
        compare(run_ids=["abc"], out_dir=tmp_path)


def test_compare_command_prints_table_plots_and_how_to_browse(tmp_path, capsys):
    log_experiment()
    main(["compare", "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "kpdd-cot" in out and "multiarith" in out
    assert f"plot: {tmp_path / 'cli' / 'accuracy_by_dataset.png'}" in out
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out


def test_format_duration_picks_a_readable_unit():
    assert [format_duration(s) for s in (None, 42.4, 300, 9000)] == ["-", "42 s", "5.0 min", "2.5 h"]


def test_compare_accuracy_bars_draw_each_logged_95_percent_interval(tmp_path):
    from kpdd.tracking.plots import accuracy_bars
    from kpdd.tracking.runs import CI_HIGH_PREFIX, CI_LOW_PREFIX

    with command_run("eval", tags={METHOD: "cot", STUDENT: "smollm2-135m"}):
        mlflow.log_metrics({accuracy_key("gsm8k"): 0.5, f"{CI_LOW_PREFIX}gsm8k": 0.3, f"{CI_HIGH_PREFIX}gsm8k": 0.7,
                            accuracy_key("svamp"): 0.25})  # svamp logged without its interval
    row = compare(out_dir=tmp_path).rows[0]
    assert row.intervals == {"gsm8k": (0.3, 0.7)}
    figure = accuracy_bars([row], ["gsm8k", "svamp"], ["cot"], [(0.1, 0.2, 0.3)])
    errorbars = next(c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer))
    # One vertical segment per bar, (x, low) → (x, high); svamp and the average have no interval, so none.
    segments = [segment for segment in errorbars.lines[2][0].get_segments() if len(segment)]
    assert [value for (_, low), (_, high) in segments for value in (low, high)] == pytest.approx([30.0, 70.0])


def test_compare_plots_improve_rounds_against_round_and_training_traces(tmp_path):
    from kpdd.tracking.results import log_round

    with command_run("improve", tags={METHOD: "kpdd-pot", STUDENT: "smollm2-135m"}) as run:
        log_round({"round": 0, "val_accuracy": 0.10, "training_traces": 31})
        for round_, (accuracy, traces) in enumerate([(0.20, 300), (0.25, 420)], 1):
            with stage_run(f"round-{round_}"):
                log_round({"round": round_, "drawn": 800, "kept": 40, "new_questions": 12,
                           "training_traces": traces, "val_accuracy": accuracy})
    result = compare(out_dir=tmp_path)  # an experiment with improve runs only: no rows, still a plot
    assert result.rows == [] and [p.name for p in result.plots] == ["accuracy_vs_rounds.png"]
    assert len(colours_in(result.plots[0])) > 50 and TAB10[0] in colours_in(result.plots[0])
    assert f"round 0 10.0% (31 traces), round 1 20.0% (300 traces), round 2 25.0% (420 traces)" in result.table
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "rft/kept")
    assert [(m.step, m.value) for m in history] == [(1, 40.0), (2, 40.0)]
