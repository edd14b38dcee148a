"""``kpdd demo``: the whole compile-to-finetune loop, offline, on the shipped data and the shipped student.

First, what distillation gives: the shipped student (``shipped:kpdd-pot``) beside its untrained base model, the same
program in the same prompts, on a seeded sample of test questions (:func:`run_shipped_comparison`, through
``kpdd eval``'s driver on vLLM's continuous batching), with the questions the student solves and its base does not.
Then, for each program (KPDD-PoT and the direct-answer baseline by default): gold-annotation traces of a small GSM8K
subset → a LoRA fine-tune of SmolLM2-135M → evaluation on seeded subsets of GSM8K, SVAMP, ASDiv and MultiArith.
Every step is an MLflow run (one ``demo`` run, a ``compile`` child per program with its stages), each trained student
is an MLflow model with its accuracy (``--register-as``: also in the Model Registry), and the comparison table
closes the demo. The defaults (one epoch over 24 questions, 2 per evaluation set) fit a 2-core CPU in a few
minutes; the options scale it up to the full experiment on a GPU (``--train-size 0 --eval-size 0 --epochs 3
--device cuda``, or ``--config configs/gsm8k-full.toml``). The training options are ``kpdd finetune``'s (the same
:class:`~kpdd.finetune.trainer.TrainConfig`), with the demo's own defaults.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.config import Result, option, redefault, save_config
from kpdd.distributed import is_main_process
from kpdd.errors import ConfigError
from kpdd.finetune.student import STUDENT_FILE
from kpdd.finetune.trainer import TrainConfig
from kpdd.run.options import (ENGINES, GenerationOptions, LocalEngineOptions, ParallelOptions, RegistryOptions,
                               RunSizes, StudentFormatOptions, shared_options)

SHIPPED_DIR = "shipped-vs-base"  # under --out, a folder per student: its base's student directory, both predictions
EXAMPLES = 2  # questions shown that the trained student solves and its base model does not


@dataclass(frozen=True)
class DemoConfig(RunSizes, GenerationOptions, ParallelOptions, RegistryOptions, StudentFormatOptions,
                 LocalEngineOptions, TrainConfig):
    programs: list[str] = option(["kpdd-pot", "direct"], "programs to distil and compare")
    datasets: list[str] = option(["all"], "evaluation datasets")
    augment: int = option(0, "program-checked variants per traced question (kpdd augment; 0: none)", at_least=0)
    rft_rounds: int = option(0, "rounds of rejection-sampling fine-tuning after the fine-tune (kpdd improve; 0: none)",
                             at_least=0)
    out: str = option("kpdd-runs/demo", "output directory")
    shipped: str = option("shipped:kpdd-pot", "trained student shown first, beside its untrained base model on the "
                                              "same program and prompts")
    shipped_size: int = option(40, "test questions per dataset on which that student and its base model are "
                                   "compared (0: no comparison)", at_least=0)
    shipped_datasets: list[str] = option(["multiarith"], "datasets of that comparison")
    shipped_engine: str = option("vllm", "local engine of that comparison", choices=ENGINES)
    train_size: int = redefault(RunSizes, "train_size", 24, help="GSM8K train questions traced by the gold teacher "
                                                                 "(0: all)")
    eval_size: int = redefault(RunSizes, "eval_size", 2, help="questions per evaluation dataset (0: the full sets)")
    max_tokens: int = redefault(GenerationOptions, "max_tokens", 320,
                                help="max new tokens per student call during evaluation (a one-call student writes "
                                     "every stage in one call)")
    threads: int = redefault(ParallelOptions, "threads", 64,
                             help="questions in flight during evaluation (batched by the engine)")
    register_as: str | None = redefault(RegistryOptions, "register_as",
                                        help="register each trained student in the MLflow Model Registry under this "
                                             "name, followed by -<program> when the demo trains several")
    # The training options of `kpdd finetune`, from the demo's sizes: one packed row per step, no accumulation.
    max_steps: int = redefault(TrainConfig, "max_steps", -1, aliases=("steps",))
    batch_size: int | None = redefault(TrainConfig, "batch_size", 1)
    grad_accum: int | None = redefault(TrainConfig, "grad_accum", 1)
    max_length: int = redefault(TrainConfig, "max_length", 512)
    learning_rate: float | None = redefault(TrainConfig, "learning_rate", 2e-3)
    eval_steps: int = redefault(TrainConfig, "eval_steps", 200)
    save_steps: int = redefault(TrainConfig, "save_steps", 200)
    logging_steps: int = redefault(TrainConfig, "logging_steps", 1)


def is_small_training(config: DemoConfig) -> bool:
    """Few enough optimizer steps that every step's loss is worth logging."""
    return 0 < config.max_steps <= 50 or 0 < config.train_size <= 256


def is_smoke_sized(config: DemoConfig) -> bool:
    """A run too small for its figures to mean anything: it shows the loop and the error taxonomy."""
    return is_small_training(config) or 0 < config.eval_size < 50


@dataclass(frozen=True)
class DemoResult(Result):
    """What ``kpdd demo`` showed: its first table (None with ``--shipped-size 0``, or on a process other than the
    main one) and, by program, the ``compile`` run's id, the compiled directory, the evaluation's scores, the trace
    store's stats, each student's training figures, its MLflow model and the name it was registered under."""

    shipped: ShippedComparison | None
    programs: dict[str, dict[str, Any]]


def run_demo(config: DemoConfig, progress: bool = True, echo=print) -> DemoResult:
    """Run the demo under the active MLflow run: the shipped student beside its base model, then the loop per
    program."""
    from kpdd.compile.gold.augment import SUPPORTED_METHODS as AUGMENTABLE
    from kpdd.eval.harness import format_report
    from kpdd.run.compile import CompileConfig, logged_student, run_compile
    from kpdd.run.eval import EvalConfig, run_eval
    from kpdd.tracking import METHOD, STUDENT, TEACHER, command_run
    from kpdd.tracking.results import log_headline, maybe_stage
    from kpdd.tracking.runs import check_registered_name

    check_registered_name(config.register_as)
    out = Path(config.out)
    if is_main_process():  # under `accelerate launch`, one process writes
        save_config(config, out)
    shipped = run_shipped_comparison(config, progress=progress, echo=echo) if is_main_process() else None
    results = {}
    for program in config.programs:
        echo(f"\n== {program}: gold traces → LoRA fine-tune of {config.student} → evaluation ==")
        compile_config = CompileConfig(
            **shared_options(config, TrainConfig, StudentFormatOptions, LocalEngineOptions),
            rft_rounds=config.rft_rounds, program=program, teacher="gold",
            limit=config.train_size or None, out=str(out / program),
            augment=config.augment if program in AUGMENTABLE else 0)
        tags = {METHOD: program, TEACHER: "gold", STUDENT: config.student}
        with command_run("compile", compile_config, tags=tags) as run:
            compiled = run_compile(compile_config, progress=progress, log_model=False)
            if not is_main_process():  # under `accelerate launch` every process trains; the main one evaluates
                continue
            # Logged with the evaluation's settings, so the model predicts what the evaluation measured.
            registered_as = registered_name(config, program)
            model = logged_student(compile_config, compiled.compiled, register_as=registered_as,
                                   max_tokens=config.max_tokens, threads=config.threads)
            eval_config = EvalConfig(program=str(compiled.compiled), lm=str(compiled.compiled), engine=config.engine,
                                     device=config.device, datasets=config.datasets, limit=config.eval_size or None,
                                     seed=config.seed, max_tokens=config.max_tokens, threads=config.threads,
                                     out=str(out / program / "predictions.jsonl"))
            with maybe_stage("eval", **eval_config.__dict__):
                evaluated = run_eval(eval_config, progress=progress)
            log_headline(evaluated.scores, evaluated.examples, model_id=model and model.model_id)
        log_headline(evaluated.scores, evaluated.examples, prefix=f"{program}/")  # on the demo run
        echo(format_report(evaluated.scores))
        results[program] = {"run_id": run.info.run_id, "compiled": compiled.compiled, "scores": evaluated.scores,
                            "traces": compiled.traces, "students": compiled.students,
                            "model": model, "registered_as": registered_as}
    return DemoResult(shipped, results)


def registered_name(config: DemoConfig, program: str) -> str | None:
    """``--register-as``: the name itself for one program, ``<name>-<program>`` for each of several."""
    if config.register_as is None or len(config.programs) == 1:
        return config.register_as
    return f"{config.register_as}-{program}"


@dataclass(frozen=True)
class ShippedComparison(Result):
    """The demo's first table: a trained student and its untrained base model on the same questions."""

    student: str  # what --shipped names
    base: str  # the student's base model
    program: str
    engine: str
    scores: dict[str, dict[str, Any]]  # {"student" | "base": {dataset: DatasetScore}}
    predictions: dict[str, str]  # {"student" | "base": predictions file}
    examples: list[dict[str, Any]]  # {"student": record, "base": record} of questions only the student solved
    solved_only: int  # how many questions the student solved and its base model did not

    def format(self) -> str:
        """The table (accuracy, 95 % interval, n), the errors by first cause, and the examples."""
        names = {"student": f"{self.student} (distilled)", "base": f"{self.base} (untrained)"}
        width = max(len(name) for name in names.values())
        lines = [f"{'dataset':<12} {'model':<{width}} {'n':>4} {'accuracy':>9}  95% interval"]
        for dataset in self.scores["student"]:
            for who, name in names.items():
                score = self.scores[who][dataset]
                low, high = score.interval
                lines.append(f"{dataset:<12} {name:<{width}} {score.total:>4} {score.accuracy:>9.1%}  "
                             f"[{low:.1%}, {high:.1%}]")
        lines.append("")
        for who in names:
            errors = Counter()
            for score in self.scores[who].values():
                errors.update(score.errors)
            listed = ", ".join(f"{error} {count}" for error, count in errors.most_common())
            lines.append(f"wrong, by first cause ({who}): {listed or 'none'}")
        if self.examples:
            lines.append(f"\nSolved by the student and not by its base model: {self.solved_only} questions; "
                         f"the {len(self.examples)} shortest solutions:")
        for pair in self.examples:
            lines += example_lines(pair["student"], pair["base"])
        return "\n".join(lines)


def run_shipped_comparison(config: DemoConfig, progress: bool = True, echo=print) -> ShippedComparison | None:
    """``--shipped`` and its base model, untrained, through ``kpdd eval``'s driver: the same program in the same
    prompt format and call mode (the base is given a student directory that records them and no adapter), the same
    seeded questions, greedy. The engine is closed afterwards unless the loop's evaluation runs on it."""
    from kpdd.engines.batching import check_engine
    from kpdd.eval.harness import read_predictions
    from kpdd.finetune.student import read_student
    from kpdd.run.eval import EvalConfig, engine_spec, run_eval
    from kpdd.run.paths import slug
    from kpdd.tracking.results import log_headline, mlflow_active

    if not config.shipped_size:
        return None
    ref = read_student(config.shipped)
    if ref.root is None or ref.program is None:
        raise ConfigError(f"--shipped {config.shipped}: not a trained student (no {STUDENT_FILE} naming its program); "
                          "expected a student directory or a shipped student such as shipped:kpdd-pot")
    check_engine(config.shipped_engine, "--shipped-engine")
    directory = Path(config.out) / SHIPPED_DIR / slug(config.shipped)  # a rerun resumes this student's files only
    base_dir = untrained_student(ref, directory / "base")
    echo(f"\n== the distilled student beside its untrained base model ==\n{config.shipped} and its base {ref.base}: "
         f"the same program ({ref.program}) in the same prompts, greedy, on {config.shipped_size} seeded test "
         f"questions per dataset ({config.shipped_engine})")
    scores, predictions, records = {}, {}, {}
    for who, lm in (("student", config.shipped), ("base", str(base_dir))):
        eval_config = EvalConfig(program=ref.program, lm=lm, engine=config.shipped_engine, device=config.device,
                                 torch_threads=config.torch_threads, datasets=config.shipped_datasets,
                                 limit=config.shipped_size, seed=config.seed, max_tokens=config.max_tokens,
                                 threads=config.threads, out=str(directory / f"{who}.jsonl"))
        evaluated = run_eval(eval_config, progress=progress, log=False)
        scores[who], predictions[who] = evaluated.scores, str(evaluated.predictions)
        records[who] = {(r["dataset"], r["question_id"]): r for r in read_predictions(evaluated.predictions)}
        log_headline(evaluated.scores, evaluated.examples, prefix=f"shipped-{who}/")
    if config.shipped_engine != config.engine:
        engine_spec(eval_config).close()  # frees its memory for the training
    solved = solved_by_student_only(records["student"], records["base"])
    comparison = ShippedComparison(config.shipped, ref.base, ref.program, config.shipped_engine, scores, predictions,
                                   [{"student": records["student"][key], "base": records["base"].get(key, {})}
                                    for key in solved[:EXAMPLES]], len(solved))
    if mlflow_active():
        import mlflow

        mlflow.log_text(comparison.format(), f"{SHIPPED_DIR}/table.txt")
        for path in predictions.values():
            mlflow.log_artifact(path, SHIPPED_DIR)
    echo(comparison.format())
    return comparison


def untrained_student(ref, directory: Path) -> Path:
    """A student directory for ``ref``'s base model with no adapter, recording ``ref``'s program, prompt format and
    call mode, so that ``kpdd eval`` prompts the base exactly as it prompts the trained student."""
    from kpdd.finetune.student import SHIPPED_MODELS, write_student

    base = ref.base if ref.base in SHIPPED_MODELS else ref.base_path
    directory.mkdir(parents=True, exist_ok=True)
    write_student(directory, base, None, ref.program, f"{Path(str(ref.base)).name}-untrained", {},
                  prompt_format=ref.prompt_format, student_calls=ref.student_calls, repeated=ref.repeated)
    return directory


def solved_by_student_only(student: dict[Any, dict], base: dict[Any, dict]) -> list[Any]:
    """The keys of the questions the student answers right and the base model does not (predictions records by key),
    shortest solution first (the easiest to read), else in the order of the seeded sample."""
    solved = [key for key, record in student.items() if record["correct"] and not base.get(key, {}).get("correct")]
    return sorted(solved, key=lambda key: len(str(student[key].get("stages", {}).get("program", ""))))


def example_lines(student: dict[str, Any], base: dict[str, Any], width: int = 116) -> list[str]:
    """One example: the question, the student's program (or answer), and what the base model wrote instead."""
    import textwrap

    program = student.get("stages", {}).get("program")
    solution = "; ".join(line.strip() for line in program.splitlines() if line.strip()) if program else ""
    said = base.get("stages", {}).get("raw_output")
    if base.get("answer") is not None:
        base_line = f"{number(base['answer'])} ({base.get('error') or 'wrong answer'})"
    else:
        base_line = f"no answer ({base.get('error')})" + (f"; it wrote {shorten(said, 80)!r}" if said else "")
    wrap = dict(width=width, break_long_words=False, break_on_hyphens=False)
    return [*textwrap.wrap(f"{student['question_id']} (gold {number(student['gold'])}): {student['question']}",
                           initial_indent="  ", subsequent_indent="    ", **wrap),
            *textwrap.wrap(f"student → {number(student['answer'])}" + (f": {solution}" if solution else ""),
                           initial_indent="    ", subsequent_indent="      ", **wrap),
            *textwrap.wrap(f"base    → {base_line}", initial_indent="    ", subsequent_indent="      ", **wrap)]


def number(value: Any) -> str:
    """8.0 → '8', 2.5 → '2.5'; anything else as it is."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def shorten(text: str, length: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"
