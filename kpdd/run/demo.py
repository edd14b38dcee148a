"""``kpdd demo``: the whole compile-to-finetune loop, offline, on the shipped data and the shipped student.

For each program (KPDD-PoT and the direct-answer baseline by default): gold-annotation traces of a small GSM8K
subset → a LoRA fine-tune of SmolLM2-135M → evaluation on seeded subsets of GSM8K, SVAMP, ASDiv and MultiArith.
Every step is an MLflow run (one ``demo`` run, a ``compile`` child per program with its stages), each trained student
is an MLflow model with its accuracy (``--register-as``: also in the Model Registry), and the comparison table
closes the demo. The defaults (one epoch over 24 questions, 2 per evaluation set) fit a 2-core CPU in a few
minutes; the options scale it up to the full experiment on a GPU (``--train-size 0 --eval-size 0 --epochs 3
--device cuda``, or ``--config configs/gsm8k-full.toml``). The training options are ``kpdd finetune``'s (the same
:class:`~kpdd.finetune.trainer.TrainConfig`), with the demo's own defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.config import option, redefault, save_config
from kpdd.distributed import is_main_process
from kpdd.finetune.trainer import TrainConfig
from kpdd.run.options import LocalEngineOptions, StudentFormatOptions, shared_options


@dataclass(frozen=True)
class DemoConfig(StudentFormatOptions, LocalEngineOptions, TrainConfig):
    programs: list[str] = option(["kpdd-pot", "direct"], "programs to distil and compare")
    train_size: int = option(24, "GSM8K train questions traced by the gold teacher (0: all)", at_least=0)
    eval_size: int = option(2, "questions per evaluation dataset (0: the full sets)", at_least=0)
    datasets: list[str] = option(["all"], "evaluation datasets")
    max_tokens: int = option(320, "max new tokens per student call during evaluation (a one-call student writes "
                                  "every stage in one call)", at_least=1)
    threads: int = option(16, "questions in flight during evaluation (batched by the engine)", at_least=1)
    augment: int = option(0, "program-checked variants per traced question (kpdd augment; 0: none)", at_least=0)
    rft_rounds: int = option(0, "rounds of rejection-sampling fine-tuning after the fine-tune (kpdd improve; 0: none)",
                             at_least=0)
    register_as: str | None = option(None, "register each trained student in the MLflow Model Registry under this "
                                           "name, followed by -<program> when the demo trains several")
    out: str = option("kpdd-runs/demo", "output directory")
    # The training options of `kpdd finetune`, from the demo's sizes: one packed row per step, no accumulation.
    max_steps: int = redefault(TrainConfig, "max_steps", -1, aliases=("steps",))
    batch_size: int | None = redefault(TrainConfig, "batch_size", 1)
    grad_accum: int | None = redefault(TrainConfig, "grad_accum", 1)
    packing: bool | None = redefault(TrainConfig, "packing", True)
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


def run_demo(config: DemoConfig, progress: bool = True, echo=print) -> dict[str, Any]:
    """Run the demo under the active MLflow run; returns each program's compiled directory and scores."""
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
            model = logged_student(compile_config, compiled["compiled"], register_as=registered_as,
                                   max_tokens=config.max_tokens, threads=config.threads)
            eval_config = EvalConfig(program=compiled["compiled"], lm=compiled["compiled"], engine=config.engine,
                                     device=config.device, datasets=config.datasets, limit=config.eval_size or None,
                                     seed=config.seed, max_tokens=config.max_tokens, threads=config.threads,
                                     out=str(out / program / "predictions.jsonl"))
            with maybe_stage("eval", **eval_config.__dict__):
                evaluated = run_eval(eval_config, progress=progress)
            log_headline(evaluated["scores"], evaluated["examples"], model_id=model and model.model_id)
        log_headline(evaluated["scores"], evaluated["examples"], prefix=f"{program}/")  # on the demo run
        echo(format_report(evaluated["scores"]))
        results[program] = {"run_id": run.info.run_id, "compiled": compiled["compiled"], "scores": evaluated["scores"],
                            "traces": compiled["traces"], "students": compiled["students"],
                            "model": model, "registered_as": registered_as}
    return results


def registered_name(config: DemoConfig, program: str) -> str | None:
    """``--register-as``: the name itself for one program, ``<name>-<program>`` for each of several."""
    if config.register_as is None or len(config.programs) == 1:
        return config.register_as
    return f"{config.register_as}-{program}"
