"""The full experiment in one time-boxed run: gold traces → full fine-tune → evaluation, method by method.

    kpdd experiment --out DIR [--budget-s SECONDS] [--max-files N] [--max-file-mb MB]

Runs go in priority order (:mod:`kpdd.run.experiment_plan`) while the budget lasts; each is estimated first and
starts only if it fits, so it finishes whole or not at all. After the KPDD-PoT runs, the best KPDD-PoT recipe is
trained again as a LoRA student (the shipped student), and TRL's ``SFTTrainer`` defaults are timed against kpdd's
trainer on the same records. The report lands in ``--out`` (:mod:`kpdd.run.experiment_report`), within the caps on
files and sizes where they are given. ``--config configs/experiment-dry.toml`` is the same path on CPU at a tiny size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpdd.config import option, redefault
from kpdd.errors import ConfigError
from kpdd.finetune.trainer import TrainConfig
from kpdd.run.experiment_plan import METHOD_ORDER, Rates, Recipe, Workload, mfu, new_tokens_cap, plan_recipes
from kpdd.run.options import GenerationOptions, ParallelOptions, RunSizes, shared_options

if TYPE_CHECKING:
    from kpdd.run.eval import EvalResult
    from kpdd.run.finetune import FinetuneResult

logger = logging.getLogger(__name__)

START_ENV = "KPDD_EXPERIMENT_T0"  # a wrapper's start (Unix seconds): its set-up counts against the budget


@dataclass(frozen=True)
class ExperimentConfig(RunSizes, GenerationOptions, ParallelOptions, TrainConfig):
    """The experiment's own options, then those it shares with the demo (sizes, evaluation), then the training
    options of `kpdd finetune` with the experiment's defaults: a full fine-tune (``--lora`` is set per run; the LoRA
    student uses ``--lora-learning-rate``)."""

    out: str = option("", "output folder (required): results, MLflow store, predictions, the LoRA student")
    work: str = option("", "folder for traces, students and predictions (default <out>/../kpdd-experiment-work)")
    budget_s: float | None = option(None, f"time budget in seconds for the whole experiment, counted from "
                                          f"${START_ENV} where set (a wrapper's start, so its set-up counts), else "
                                          "from the command's start; a run starts only if its estimate fits what is "
                                          "left", above=0, default_text="none: every run of the plan")
    reserve_s: float = option(25.0, "seconds of the budget kept for writing the outputs at the end", at_least=0)
    max_files: int | None = option(None, "the most files --out may hold, counting those already there (a "
                                         "wrapper's log): results.md and results.json always, then the LoRA "
                                         "student, the MLflow store and the predictions while they fit; the rest "
                                         "stays in the work folder", at_least=2, default_text="no cap")
    max_file_mb: float | None = option(None, "the largest file --out may get, in MB (10^6 bytes); a larger one "
                                             "stays in the work folder", above=0, default_text="no cap")
    gguf: str | None = option(None, "the student's GGUF file, converted into the kpdd cache when it is not there")
    augment_size: int = option(1000, "GSM8K train questions `kpdd augment` varies (0: all)", at_least=0)
    lora_learning_rate: float = option(1e-3, "peak learning rate of the LoRA student", above=0)
    engine_batch: int = option(1024, "requests per generation batch", at_least=1)
    trl_records: int = option(512, "SFT records on which TRL's trainer, as it comes, is timed against kpdd's "
                                   "(0: skip it)", at_least=0)
    peak_tflops: float = option(989.0, "the device's dense bf16 peak in TFLOP/s: MFU is quoted against it and the "
                                       "first estimates assume 10 % of it (default: an H200's, by its datasheet)",
                                above=0)
    methods: list[str] = option(list(METHOD_ORDER), "programs to run, a subset of the plan's (its order is kept)",
                                choices=METHOD_ORDER)
    max_tokens: int = redefault(GenerationOptions, "max_tokens",
                                help="cap on new tokens per student call (lowered per program to 1.25x the 99th "
                                     "percentile of its gold completions)")
    threads: int = redefault(ParallelOptions, "threads", 1024, help="questions in flight during evaluation")
    device: str = redefault(TrainConfig, "device", "cuda")
    lora: bool = redefault(TrainConfig, "lora", False)
    batch_size: int | None = redefault(TrainConfig, "batch_size", 16)
    grad_accum: int | None = redefault(TrainConfig, "grad_accum", 1)
    max_length: int = redefault(TrainConfig, "max_length", 2048)
    learning_rate: float | None = redefault(TrainConfig, "learning_rate", 1e-4)
    val_fraction: float = redefault(TrainConfig, "val_fraction", 0.02)
    eval_steps: int = redefault(TrainConfig, "eval_steps", 100_000)
    save_steps: int = redefault(TrainConfig, "save_steps", 100_000)
    logging_steps: int = redefault(TrainConfig, "logging_steps", 10)


class Clock:
    """Seconds used and left of the experiment's time budget (without one, time never runs out)."""

    def __init__(self, budget_s: float | None, reserve_s: float, start: float | None = None):
        self.start = start if start is not None else time.time()
        self.budget_s, self.reserve_s = budget_s, reserve_s

    @classmethod
    def of(cls, config: ExperimentConfig) -> Clock:
        """The config's budget, counted from ``$KPDD_EXPERIMENT_T0`` where set, else from now."""
        start = os.environ.get(START_ENV)
        try:
            return cls(config.budget_s, config.reserve_s, float(start) if start else None)
        except ValueError:
            raise ConfigError(f"${START_ENV}: expected Unix seconds (e.g. `date +%s.%N`), got {start!r}") from None

    def used(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        if self.budget_s is None:
            return math.inf
        return self.budget_s - self.reserve_s - self.used()


def detect_features() -> dict[str, Any]:
    """What other work adds to kpdd, used where present and noted where not: `kpdd augment`'s driver
    (program-checked variants) and the students' format (`student_calls`, `prompt_format` on the fine-tune config)."""
    import importlib.util

    from kpdd.run.finetune import FinetuneConfig

    fields = FinetuneConfig.__dataclass_fields__
    return {"augment": importlib.util.find_spec("kpdd.run.augment") is not None,
            "student_calls": "student_calls" in fields, "prompt_format": "prompt_format" in fields}


def sft_records(traces: list[dict], program: str, student_calls: str | None) -> list[dict]:
    """The training records of a run, built as `kpdd finetune` builds them (same program, format, calls)."""
    from kpdd.finetune.sft import build_sft_data, merge_tasks
    from kpdd.modules import build_program

    if student_calls is None:  # before the students' format: one record per stage call
        return merge_tasks(build_sft_data(traces, build_program(program), val_fraction=0.0))["train"]
    from kpdd.modules.one_call import OneCallProgram, repeated_predictors
    from kpdd.modules.saved import build_student_program

    student = build_student_program(program, student_calls, repeated_predictors(traces))
    data = build_sft_data(traces, student.program if isinstance(student, OneCallProgram) else student,
                          val_fraction=0.0, student_calls=student_calls)
    return merge_tasks(data)["train"]


class Experiment:
    """The experiment's runs; ``results`` is what the report is written from."""

    def __init__(self, config: ExperimentConfig, clock: Clock):
        self.config, self.clock = config, clock
        self.work = Path(config.work) if config.work else Path(config.out).resolve().parent / "kpdd-experiment-work"
        self.rates = Rates.assumed(config.device, config.peak_tflops * 1e12)
        self.results: dict[str, Any] = {"config": dataclasses.asdict(config), "runs": [], "notes": [], "setup": {}}
        self._traces: dict[tuple[str, bool], list[str]] = {}
        self._tokenizer = None

    def note(self, text: str) -> None:
        logger.warning("%s", text)
        self.results["notes"].append(text)

    # ---- data -----------------------------------------------------------------------------------------------
    def traces(self, program: str, variants: bool) -> list[str]:
        """Trace stores for a program: gold (generated once), plus `kpdd augment`'s variants when asked for."""
        from kpdd.run.traces import TracesConfig, run_traces

        if (program, False) not in self._traces:
            start = time.time()
            config = TracesConfig(program=program, teacher="gold", limit=self.config.train_size or None,
                                  seed=self.config.seed, threads=8, out=str(self.work / "traces" / f"{program}.jsonl"))
            stats = run_traces(config, progress=False)
            self.results["setup"][f"traces/{program}"] = {"s": round(time.time() - start, 1),
                                                          **{k: v for k, v in stats.as_dict().items() if k != "path"}}
            self._traces[(program, False)] = [str(stats.path)]
        if variants and (program, True) not in self._traces:
            gold = self._traces[(program, False)]
            self._traces[(program, True)] = gold + self.variants(program)
        return self._traces[(program, variants)]

    def variants(self, program: str) -> list[str]:
        """`kpdd augment`'s program-checked variants of a seeded subset of questions (its driver, in process);
        none, and a note, where it fails (e.g. a program it does not vary)."""
        import importlib

        size = min(filter(None, (self.config.train_size, self.config.augment_size)), default=0)
        target = self.work / "traces" / f"{program}-variants.jsonl"
        start = time.time()
        try:
            augment = importlib.import_module("kpdd.run.augment")
            augment.run_augment(augment.AugmentConfig(program=program, limit=size or None, seed=self.config.seed,
                                                      out=str(target)), progress=False)
        except Exception as exc:  # noqa: BLE001  (the gold traces still make a run)
            self.note(f"kpdd augment --program {program} failed, gold traces only: {type(exc).__name__}: {exc}")
            return []
        self.results["setup"][f"augment/{program}"] = {"s": round(time.time() - start, 1), "questions": size}
        return [str(target)]

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from kpdd.finetune.student import ensure_base_model

            self._tokenizer = AutoTokenizer.from_pretrained(ensure_base_model())
        return self._tokenizer

    def workload(self, recipe: Recipe, stores: list[str], eval_questions: int) -> tuple[Workload, dict]:
        """The run's SFT tokens (a tokenized sample, scaled by characters) and evaluation calls."""
        from kpdd.run.finetune import load_traces

        traces = load_traces(stores, recipe.program)
        records = sft_records(traces, recipe.program, recipe.student_calls)
        counts = sft_token_counts(records, self.tokenizer())
        c = self.config
        steps_cap = c.max_steps * c.batch_size * c.grad_accum * c.max_length if c.max_steps > 0 else None
        tokens = counts["tokens"] if steps_cap is None else min(counts["tokens"], steps_cap)
        calls_per_question = len(records) / max(len(traces), 1)
        cap = new_tokens_cap(counts["p99_completion_tokens"], c.max_tokens)
        load = Workload(train_tokens=tokens, epochs=c.epochs if c.max_steps <= 0 else 1.0,
                        eval_calls=round(eval_questions * calls_per_question), max_new_tokens=cap,
                        engine_batch=c.engine_batch)
        return load, {"traces": len(traces), "sft_records": len(records), **counts,
                      "calls_per_question": round(calls_per_question, 2)}

    # ---- one run ----------------------------------------------------------------------------------------------
    def run(self, recipe: Recipe, eval_examples: list, features: dict) -> dict[str, Any]:
        """Estimate, then train and evaluate the recipe if it fits the time left."""
        entry: dict[str, Any] = {"name": recipe.name, **dataclasses.asdict(recipe)}
        self.results["runs"].append(entry)
        try:
            stores = self.traces(recipe.program, recipe.variants)
            load, data = self.workload(recipe, stores, len(eval_examples))
        except Exception as exc:  # noqa: BLE001  (one broken run must not lose the other results)
            entry["status"] = f"failed before training: {type(exc).__name__}: {exc}"
            logger.exception("%s: preparing the run failed", recipe.name)
            return entry
        estimate = load.total_s(self.rates) + data["tokens"] / 1e6  # + TRL's tokenization, ~1M tokens/s
        entry.update(data=data, estimate_s=round(estimate, 1), max_new_tokens=load.max_new_tokens,
                     epochs=load.epochs)
        if estimate > self.clock.left():
            entry["status"] = f"skipped: needs ~{estimate:.0f} s, {max(self.clock.left(), 0):.0f} s left"
            logger.warning("%s %s", recipe.name, entry["status"])
            return entry
        logger.warning("%s: starting (estimate %.0f s, %.0f s left)", recipe.name, estimate, self.clock.left())
        start = time.time()
        try:
            entry.update(self.train_and_eval(recipe, stores, load, eval_examples, features))
            entry["status"] = "done"
            train, ev = entry["train"], entry["eval"]
            logger.warning("%s done: training %s tokens/s (MFU %s), evaluation %s output tokens/s, average %.1f %%",
                           recipe.name, train["tokens_per_s"],
                           "n/a on CPU" if train["mfu"] is None else f"{100 * train['mfu']:.1f} %",
                           ev["output_tokens_per_s"], 100 * (entry["average"] or 0.0))
        except Exception as exc:  # noqa: BLE001
            entry["status"] = f"failed: {type(exc).__name__}: {exc}"
            logger.exception("%s failed", recipe.name)
        entry["wall_s"] = round(time.time() - start, 1)
        return entry

    def train_and_eval(self, recipe: Recipe, stores: list[str], load: Workload, eval_examples: list,
                       features: dict) -> dict[str, Any]:
        from kpdd.run.eval import EvalConfig, engine_spec, run_eval
        from kpdd.run.finetune import FinetuneConfig, run_finetune
        from kpdd.tracking import METHOD, STUDENT, TEACHER, command_run
        from kpdd.tracking.results import log_finetune, maybe_stage, metrics_logger

        c, out = self.config, self.work / recipe.name
        extra = {"student_calls": recipe.student_calls} if features["student_calls"] and recipe.student_calls else {}
        training = {**shared_options(c, TrainConfig), "lora": recipe.lora,
                    "learning_rate": c.lora_learning_rate if recipe.lora else c.learning_rate}
        finetune = FinetuneConfig(**training, traces=stores, program=recipe.program, out=str(out / "compiled"), **extra)
        tags = {METHOD: recipe.program, TEACHER: "gold+variants" if recipe.variants else "gold",
                STUDENT: "smollm2-135m" + ("+lora" if recipe.lora else "")}
        with command_run("compile", finetune, tags=tags):
            with maybe_stage("finetune", recipe=recipe.name):
                trained = run_finetune(finetune, progress=False, on_log=metrics_logger())
                log_finetune(trained)
            evaluation = EvalConfig(program=str(trained.out), lm=str(trained.out), engine="transformers",
                                    device=c.device, limit=c.eval_size or None, seed=c.seed,
                                    max_tokens=load.max_new_tokens, threads=c.threads, engine_batch=c.engine_batch,
                                    trace_sample_rate=0.0, out=str(out / "predictions.jsonl"))
            engine = engine_spec(evaluation)  # the engine run_eval uses: its counters give the decoding figures
            tokens_before, batches_before = engine.output_tokens, engine.generate_calls
            with maybe_stage("eval", recipe=recipe.name):
                eval_start = time.time()
                evaluated = run_eval(evaluation, progress=False)
                eval_s = time.time() - eval_start
            decoding = {"s": eval_s, "output_tokens": engine.output_tokens - tokens_before,
                        "batches": engine.generate_calls - batches_before}
        return self.measure(trained, evaluated, decoding, load)

    def measure(self, trained: FinetuneResult, evaluated: EvalResult, decoding: dict,
                load: Workload) -> dict[str, Any]:
        """Throughputs of this run; they replace the assumed rates for the runs after it."""
        students = list(trained.students.values())
        tokens, train_s = sum(s.tokens for s in students), sum(s.train_time_s for s in students)
        tokens_per_s = tokens / train_s if train_s else 0.0
        eval_s, new_tokens = decoding["s"], decoding["output_tokens"]
        if tokens_per_s:
            self.rates.train_tokens_per_s, self.rates.measured["train"] = tokens_per_s, True
        if decoding["batches"] and eval_s:  # an upper bound per step: a batch may stop before the cap
            self.rates.decode_step_s = eval_s / (decoding["batches"] * load.max_new_tokens)
            self.rates.measured["decode"] = True
        accuracy = {name: score_dict(score) for name, score in evaluated.scores.items()}
        return {
            "student_dir": str(trained.out / "students"),
            "train": {"tokens": tokens, "s": round(train_s, 1), "tokens_per_s": round(tokens_per_s, 1),
                      "mfu": (round(mfu(tokens_per_s, peak=self.config.peak_tflops * 1e12), 4)
                              if self.config.device != "cpu" else None),
                      "loss": students[0].train_loss, "first_loss": students[0].first_loss,
                      "val_loss": students[0].val_loss, "steps": students[0].steps},
            "eval": {"s": round(eval_s, 1), "output_tokens": new_tokens, "batches": decoding["batches"],
                     "output_tokens_per_s": round(new_tokens / eval_s, 1) if eval_s else None,
                     "predictions": str(evaluated.predictions)},
            "accuracy": accuracy,
            "average": sum(a["accuracy"] for a in accuracy.values()) / len(accuracy) if accuracy else None,
        }

    # ---- TRL defaults, side by side ---------------------------------------------------------------------------
    def trl_comparison(self, recipe: Recipe) -> None:
        """kpdd's trainer vs TRL's SFTTrainer defaults on the same records (benchmarks/bench_training.py)."""
        import importlib.util

        from kpdd.run.finetune import load_traces

        bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"
        if self.config.trl_records <= 0 or not bench.is_file():
            self.note(f"TRL comparison skipped ({'--trl-records 0' if bench.is_file() else f'{bench} missing'})")
            return
        traces = load_traces(self.traces(recipe.program, False), recipe.program)
        records = sft_records(traces, recipe.program, recipe.student_calls)[: self.config.trl_records]
        tokens = sft_token_counts(records, self.tokenizer(), sample=len(records))["tokens"]
        estimate = 2 * 15.0 + 3 * tokens / self.rates.train_tokens_per_s  # two model loads; TRL assumed 2x slower
        if estimate > self.clock.left():
            self.note(f"TRL comparison skipped: needs ~{estimate:.0f} s, {self.clock.left():.0f} s left")
            return
        spec = importlib.util.spec_from_file_location("bench_training", bench)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        trl_s = module.run_trl_defaults(records, self.config.device, False, self.work / "trl-defaults")
        ours_s = module.run_kpdd(records, self.config.device, False, self.work / "trl-kpdd")
        self.results["trl_comparison"] = {
            "program": recipe.program, "records": len(records), "tokens": tokens, "full_fine_tune": True,
            "trl_defaults_s": round(trl_s, 1), "kpdd_s": round(ours_s, 1),
            "trl_defaults_tokens_per_s": round(tokens / trl_s, 1), "kpdd_tokens_per_s": round(tokens / ours_s, 1),
            "speed_up": round(trl_s / ours_s, 2)}
        logger.warning("TRL defaults vs kpdd: %s", self.results["trl_comparison"])


def sft_token_counts(records: list[dict], tokenizer, sample: int = 400, seed: int = 0) -> dict[str, int]:
    """SFT tokens of all records: a seeded sample is tokenized exactly and the rest scaled by characters
    (tokenizing every record of a full method costs tens of seconds on the GPU machine's clock)."""
    import random

    if not records:
        return {"tokens": 0, "completion_tokens": 0, "max_completion_tokens": 0, "p99_completion_tokens": 0,
                "sampled": 0}
    chosen = records if len(records) <= sample else random.Random(seed).sample(records, sample)
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in chosen]
    completions = [r["messages"][-1]["content"] for r in chosen]
    full = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    done = [len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"]]
    scale = sum(len(tokenizer.apply_chat_template(r["messages"], tokenize=False)) for r in records) / sum(map(len, texts))
    return {"tokens": round(sum(full) * scale), "completion_tokens": round(sum(done) * scale),
            "max_completion_tokens": max(done), "p99_completion_tokens": sorted(done)[int(0.99 * (len(done) - 1))],
            "sampled": len(chosen)}


def score_dict(score) -> dict[str, Any]:
    low, high = score.interval
    return {"n": score.total, "correct": score.correct, "accuracy": score.accuracy, "ci95": [low, high],
            "errors": dict(score.errors)}


def prepare_model(gguf: str | None) -> None:
    """Convert a carried GGUF into the kpdd cache, where the shipped alias looks for it."""
    if not gguf:
        return
    from kpdd.finetune.student import DEFAULT_BASE, SHIPPED_MODELS, _convert_gguf, cache_dir

    target = cache_dir() / "models" / SHIPPED_MODELS[DEFAULT_BASE].name
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(Path(gguf), target)


def run_experiment(config: ExperimentConfig, clock: Clock | None = None, *, experiment: str | None = None,
                   tracking_uri: str | None = None) -> dict[str, Any]:
    """Every run that fits the budget (``clock``: :meth:`Clock.of` the config by default), then the report in
    ``config.out``; returns the results written to ``results.json``. ``experiment`` and ``tracking_uri`` choose
    the MLflow store as for every command; a SQLite store is copied into the report."""
    import mlflow

    from kpdd.data import EVAL_DATASETS, load_dataset
    from kpdd.run.experiment_report import sqlite_file, write_outputs
    from kpdd.tracking import command_run

    if not config.out:
        raise ConfigError("experiment needs --out <folder>: where its results, store, predictions and student go")
    if not config.methods:
        raise ConfigError(f"--methods {','.join(config.methods)}: expected some of {', '.join(METHOD_ORDER)}")
    clock = clock or Clock.of(config)
    runs = Experiment(config, clock)
    runs.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    prepare_model(config.gguf)
    runs.results["setup"]["model_s"] = round(time.time() - start, 1)
    features = detect_features()
    runs.results["features"] = features
    if not features["augment"]:
        runs.note("`kpdd augment` (kpdd.run.augment) is not available: every run uses gold traces only")
    if not features["student_calls"]:
        runs.note("the students' format (student_calls) has not landed: one multitask student per method")
    eval_examples = [e for name in EVAL_DATASETS for e in load_dataset(name, limit=config.eval_size or None,
                                                                         seed=config.seed)]
    recipes = [r for r in plan_recipes(features["augment"], features["student_calls"]) if r.program in config.methods]
    kpdd_pot = [i for i, r in enumerate(recipes) if r.program == "kpdd-pot"]
    if not kpdd_pot:
        runs.note("no KPDD-PoT run in --methods: no LoRA student and no TRL comparison")
    with command_run("experiment", config, experiment=experiment, tracking_uri=tracking_uri):
        store = sqlite_file(mlflow.get_tracking_uri())
        for index, recipe in enumerate(recipes):
            runs.run(recipe, eval_examples, features)
            if kpdd_pot and index == kpdd_pot[0]:
                runs.trl_comparison(recipe)
            if kpdd_pot and index == kpdd_pot[-1]:
                runs.run(best_kpdd_pot(runs.results["runs"]), eval_examples, features)
    runs.results["rates"] = dataclasses.asdict(runs.rates)
    runs.results["used_s"] = round(clock.used(), 1)
    write_outputs(runs.results, runs.work, Path(config.out), store=store, max_files=config.max_files,
                  max_file_mb=config.max_file_mb)
    return runs.results


def best_kpdd_pot(runs: list[dict]) -> Recipe:
    """The LoRA (shipped) student's recipe: the KPDD-PoT run with the best average accuracy so far."""
    done = [r for r in runs if r["program"] == "kpdd-pot" and r.get("status") == "done" and not r["lora"]]
    best = max(done, key=lambda r: r.get("average") or 0.0) if done else {"variants": False, "student_calls": None}
    calls = "one" if best["student_calls"] == "per-stage" else best["student_calls"]  # one student ships
    return Recipe("kpdd-pot", variants=best["variants"], student_calls=calls, lora=True)


__all__ = ["METHOD_ORDER", "Clock", "ExperimentConfig", "run_experiment"]
