"""Supervised fine-tuning of a student on chat records, with TRL's ``SFTTrainer`` (full or LoRA via PEFT).

What we add to TRL's defaults, and why:
- prompt/completion records with ``completion_only_loss``: the loss covers only the assistant turn (SmolLM2's
  template has no ``{% generation %}`` markers, so ``assistant_only_loss`` cannot work);
- best-fit-decreasing packing (padding-free): sequences share rows without padding and never attend to each
  other. On GPUs transformers keeps them apart with a block-diagonal mask built from the position ids; on CPU a
  mask sends SDPA to its slow math path, so the model runs the ``sdpa_packed`` attention
  (:mod:`kpdd.finetune.attention`: each sequence of the row causal on its own) and no mask, and one
  pass holds two packed rows (about 2,000 tokens: on a 2-core CPU this and the loss's bf16 log-softmax train 1.2x
  (full) to 1.4x (LoRA) faster than 2 accumulated passes of 4 right-padded rows, at a tenth to a quarter more peak
  memory: docs/RESULTS.md). Without packing, CPU rows are right-padded to a multiple of ``pad_to_multiple`` and
  passed without a mask, 8 a step in 2 passes of balanced cost (transformers' ``BatchRebalanceSampler``), see
  :func:`causal_rows_trainer`;
- gradient checkpointing off (TRL turns it on: it recomputes the forward pass, which a 135M model never needs);
- bf16 mixed precision wherever the hardware multiplies bf16 natively: GPUs, and CPUs with AVX512-BF16/AMX
  (several times faster than fp32 on such CPUs, see docs/RESULTS.md); fp32 elsewhere; the log says which. On such
  CPUs the weights themselves are bf16 and the optimizer steps on fp32 master weights
  (:mod:`kpdd.finetune.master_weights`): autocast would copy every fp32 weight to bf16 on each pass and every
  weight gradient back (a tenth of a full fine-tuning step on a 2-core CPU);
- a fixed number of torch threads (``torch_threads``, default: the cores this process may use), so a run beside
  other work can be given fewer and does not oversubscribe the cores;
- checkpoints every ``save_steps`` and automatic resume (removed once the student is written, unless
  ``keep_checkpoints``); validation loss and tokens/s in the logs;
- one progress bar per training with the loss and tokens/s, instead of the trainer's printed log dictionaries
  (they go to ``on_log``, and from there to MLflow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kpdd.config import option
from kpdd.distributed import any_process, is_main_process
from kpdd.errors import ConfigError, DataError
from kpdd.finetune.attention import SDPA_PACKED
from kpdd.finetune.attention import register as register_packed_attention
from kpdd.finetune.hardware import CpuThreads, allocator_in_use, fast_bf16, resolve_device, use_torch_threads
from kpdd.finetune.master_weights import keep_fp32_master_weights
from kpdd.finetune.student import STUDENT_FILE
from kpdd.modules.student_format import detect_format

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
WEIGHTS = "weights"


DEVICE = (r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:<index>")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig(CpuThreads):
    """How to fine-tune one student (the hyper-parameters; data and program come from the caller). Every command
    that trains (finetune, compile, improve, demo, the GPU experiment) composes these options."""

    student: str = option("smollm2-135m", "base model: the shipped alias, or a Hugging Face checkpoint directory")
    lora: bool = option(True, "train a LoRA adapter (PEFT) instead of all weights")
    lora_r: int = option(16, "LoRA rank", at_least=1)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", at_least=1)
    lora_dropout: float = option(0.0, "LoRA dropout (on a CPU it costs a sixth of the training time: a masked copy "
                                      "of every adapted layer's input)", at_least=0, below=1)
    epochs: float = option(1.0, "passes over the training data (ignored when --max-steps > 0)", above=0)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: use epochs)", at_least=-1)
    batch_size: int | None = option(None, "packed rows (or, without packing, sequences) per forward pass; unpacked "
                                          "with accumulation on CPU, the average of a step's passes (long rows get "
                                          "fewer, short ones more)", at_least=1,
                                    default_text="8, 2 on CPU; unpacked on CPU 4")
    grad_accum: int | None = option(None, "gradient accumulation steps", at_least=1,
                                    default_text="1; unpacked on CPU 2")
    learning_rate: float | None = option(None, "peak learning rate", above=0, default_text="2e-4 with LoRA, 5e-5 full")
    warmup_ratio: float = option(0.03, "fraction of steps spent warming up the learning rate", at_least=0, below=1)
    max_length: int = option(1024, "tokens per packed row / longest sequence", at_least=1)
    packing: bool = option(True, "best-fit-decreasing packing, padding-free: sequences laid end to end in rows of "
                                 "--max-length tokens, each attending to itself only")
    pad_to_multiple: int = option(64, "without packing: round each batch's length up to a multiple of this, so "
                                      "the trainer sees a few shapes (steadier speed and memory)", at_least=1)
    val_fraction: float = option(0.05, "fraction of questions held out for validation loss", at_least=0, below=1)
    val_limit: int = option(0, "compute the validation loss on at most this many held-out records, a seeded "
                               "subset (0: all); the held-out questions stay out of training either way", at_least=0)
    eval_steps: int = option(50, "validation loss every N steps", at_least=1)
    save_steps: int = option(50, "checkpoint every N steps (resume picks up the latest)", at_least=1)
    keep_checkpoints: bool = option(False, "keep the training checkpoints once the student is written (a finished "
                                           "student never resumes from them; a full fine-tune's checkpoint, with "
                                           "its optimizer state, is several times the size of its weights)")
    time_budget_s: float = option(0.0, "stop training after this many seconds of training, counted across resumed "
                                       "runs (0: no limit); with a budget the learning rate warms up over a few "
                                       "steps, then follows a cosine over the budget's time, so a training run in "
                                       "pieces follows one schedule", at_least=0)
    logging_steps: int = option(5, "log loss every N steps", at_least=1)
    seed: int = option(0, "seed for data order and initialisation")
    device: str = option("auto", "auto, cpu or cuda (cuda:<index> for one GPU)", pattern=DEVICE)
    precision: str = option("auto", "auto (bf16 mixed precision where the hardware has bf16: GPUs, recent CPUs), "
                                    "bf16 or fp32", choices=PRECISIONS)

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 5e-5)

    def for_device(self, device: str) -> TrainConfig:
        """The batching that is fastest on ``device`` for what was left unset: packed rows (padding-free), 8 a
        pass on GPUs, 2 on CPU (a pass of about 2,000 tokens: each sequence attended causally on its own,
        :mod:`kpdd.finetune.attention`). Unpacked on CPU (``packing=False``): right-padded rows without a mask
        (:func:`causal_rows_trainer`), 8 a step in 2 passes of balanced cost (:func:`sampling_strategy`).
        Measured in ``benchmarks/bench_train.py``.
        """
        gpu = device != "cpu"
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or (8 if gpu else 2 if self.packing else 4),
            grad_accum=self.grad_accum or (1 if gpu or self.packing else 2),
        )


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    student_dir: Path
    model_id: str
    steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    first_loss: float | None = None
    tokens: int = 0
    train_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # where it ran: device, torch threads, number format, memory allocator (each run's, for its speed and memory)
    setup: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_time_s if self.train_time_s else 0.0

    def figures(self) -> dict[str, float]:
        return {k: v for k, v in {"train/loss": self.train_loss, "train/val_loss": self.val_loss,
                                  "train/first_loss": self.first_loss, "train/steps": self.steps,
                                  "train/tokens": self.tokens, "train/time_s": self.train_time_s,
                                  "train/tokens_per_s": self.tokens_per_s}.items() if v is not None}


BUDGET_WARMUP_STEPS = 10


def warmup_steps(config: TrainConfig) -> float:
    """A ratio of the planned steps; under a time budget a fixed few steps, since the planned count (from the
    epochs) is not what will run and a ratio of it can leave the whole run warming up."""
    return BUDGET_WARMUP_STEPS if config.time_budget_s else config.warmup_ratio


def use_bf16(precision: str, device: str) -> bool:
    """bf16 mixed precision (bf16 matmuls, fp32 master weights) where the hardware runs it natively."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected auto, bf16 or fp32")
    if precision == "auto":
        return fast_bf16(device)
    return precision == "bf16"


def precision_reason(precision: str, device: str) -> str:
    """Which number format the training uses, and why, in words for the log."""
    bf16 = use_bf16(precision, device)
    if precision != "auto":
        return f"{'bf16' if bf16 else 'fp32'} (asked for)"
    if device != "cpu":
        return "bf16 (a GPU)"
    return ("bf16 weights and matmuls, fp32 master weights (this CPU multiplies bf16 natively)" if bf16 else
            "fp32 (this CPU has no native bf16, where bf16 autocast runs slower than fp32)")


def causal_rows_trainer():
    """TRL's ``SFTTrainer`` with a lean loss: no attention mask, logits for the completion only.

    Unpacked rows are right-padded (TRL's collator). In a causal LM a real token attends only to earlier positions,
    which are all real; the pads come after the last real token and carry label -100, so they change no loss and no
    gradient. Without a mask, transformers' SDPA attention runs the fused causal kernel instead of the math path a
    padding mask sends it to (the mask still reaches the trainer, which counts real tokens with it). Packed rows on
    CPU carry their sequences' bounds to the ``sdpa_packed`` attention instead (:mod:`kpdd.finetune.attention`).
    The LM head (a fifth of the model's FLOPs, 49K outputs a position) then runs only on the positions that carry a
    label, under the run's autocast, and the cross-entropy on those rows alone: TRL's own fused head computes in
    fp32, which on a CPU multiplies several times slower than bf16, and adds entropy and accuracy metrics the
    loss does not need (28 % of a LoRA step on a 2-core AVX512-BF16 CPU; with LoRA dropout off as well, the
    benchmark's LoRA run went from 160 s to 63 s: docs/RESULTS.md). Packed rows on GPUs (a block-diagonal mask)
    take TRL's path untouched; several processes (``accelerate launch``) and evaluation take TRL's path through the
    wrapped model, without the mask.
    """
    import torch
    from transformers.trainer_pt_utils import BatchRebalanceSampler
    from trl import SFTTrainer

    class LargestStepFirst(BatchRebalanceSampler):
        """Passes of balanced cost, each epoch starting with the step whose largest pass holds the most tokens:
        a run that cannot hold that pass fails in its first seconds, not hours in (as transformers'
        ``LengthGroupedSampler`` puts its longest batch first). The allocator's heap still grows with the shapes
        it meets (docs/RESULTS.md)."""

        def __iter__(self):
            passes = list(super().__iter__())
            steps = [passes[i:i + self.grad_accum] for i in range(0, len(passes), self.grad_accum)]
            largest = max(range(len(steps)), key=lambda k: max(
                len(rows) * max(self.lengths[i] for i in rows) for rows in steps[k]))
            steps.insert(0, steps.pop(largest))
            return (rows for step in steps for rows in step)

    class CausalRowsTrainer(SFTTrainer):
        budget_clock = None  # a _TimeBudget: the learning rate then follows the budget's time

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.budget_clock is None:
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                self.lr_scheduler = budget_schedule(optimizer or self.optimizer, self.budget_clock,
                                                    BUDGET_WARMUP_STEPS)
            return self.lr_scheduler

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if self.args.use_cpu:
                # bf16 weights (a CPU with native bf16, train_student): the optimizer steps on fp32 copies. Called
                # again, it finds no bf16 parameter left in the optimizer and changes nothing.
                keep_fp32_master_weights(optimizer)
            return optimizer

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is BatchRebalanceSampler:
                sampler = LargestStepFirst(sampler.lengths, sampler.effective_batch_size, sampler.dp_size,
                                           sampler.grad_accum, seed=self.args.data_seed, rank=sampler.rank,
                                           drop_last=sampler.drop_last)
            return sampler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            packed = "position_ids" in inputs
            if packed and self.model.config._attn_implementation != SDPA_PACKED:  # GPUs: a mask keeps them apart
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if return_outputs or self.accelerator.num_processes > 1:
                # Through the wrapped model's own forward (DDP syncs gradients there), still without the mask.
                if not packed:
                    rows, length = inputs["input_ids"].shape
                    inputs = {key: value for key, value in inputs.items() if key != "attention_mask"}
                    inputs["position_ids"] = torch.arange(length, device=inputs["input_ids"].device).expand(rows, -1)
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            bounds = {key: inputs[key] for key in ("position_ids", "cu_seq_lens_q") if key in inputs}
            return completion_loss(model, inputs["input_ids"], inputs["labels"], self.accelerator.autocast,
                                   num_items_in_batch, **bounds)

    return CausalRowsTrainer


def completion_loss(model, input_ids, labels, autocast, num_items_in_batch=None, **packing):
    """Mean next-token cross-entropy over the labelled positions of right-padded or packed causal rows, no mask;
    the LM head runs on those positions only. ``num_items_in_batch``: the labelled tokens of the whole optimizer
    step, when the trainer accumulates several passes (the mean is then the step's). ``packing``: a packed row's
    position ids and sequence bounds (``cu_seq_lens_q``...), for an attention that keeps the sequences apart
    (:mod:`kpdd.finetune.attention`)."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with autocast():
        hidden = base.get_decoder()(input_ids=input_ids, use_cache=False, **packing).last_hidden_state
        targets = labels[:, 1:]
        labelled = targets != -100
        logits = base.get_output_embeddings()(hidden[:, :-1][labelled])
    # log-softmax in the head's own format (bf16 under autocast: the kernel accumulates in fp32 and rounds its
    # output; an fp32 copy of 49K logits a position cost a seventh of a full fine-tuning step on a 2-core CPU), the
    # picked log-probabilities summed in fp32. nll_loss, not gather: gather's backward scatters into a bf16 tensor
    # through an fp32 copy of all the logits.
    losses = F.nll_loss(F.log_softmax(logits, dim=-1), targets[labelled], reduction="none")
    total = losses.float().sum()
    count = num_items_in_batch if num_items_in_batch is not None else labelled.sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def to_prompt_completion(records: list[dict]) -> list[dict]:
    """Chat records → TRL's prompt/completion form, so the loss covers the assistant turn only."""
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]


class _Recorder:
    """A ``TrainerCallback`` that keeps the loss history and forwards each log to ``on_log``."""

    def __new__(cls, result: TrainResult, on_log: Callable[[dict, int], None] | None):
        from transformers import TrainerCallback

        class Recorder(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                step = state.global_step
                metrics = {}
                if "loss" in logs:
                    metrics["train/loss"] = logs["loss"]
                    result.train_loss = logs["loss"]
                    result.first_loss = result.first_loss if result.first_loss is not None else logs["loss"]
                if "eval_loss" in logs:
                    metrics["train/val_loss"] = result.val_loss = logs["eval_loss"]
                if "learning_rate" in logs:
                    metrics["train/learning_rate"] = logs["learning_rate"]
                if metrics:
                    result.history.append({"step": step, **metrics})
                    if on_log:
                        on_log(metrics, step)

        return Recorder()


class _ProgressBar:
    """A ``TrainerCallback`` that draws one bar per training: steps, the latest loss, and tokens/s."""

    def __new__(cls, desc: str):
        from tqdm import tqdm
        from transformers import TrainerCallback

        class ProgressBar(TrainerCallback):
            bar = None
            start = (0.0, 0)  # (time, tokens seen) when this run started: a resumed run counts from there

            def on_train_begin(self, args, state, control, **kwargs):
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, unit="step",
                                dynamic_ncols=True)
                self.start = (time.perf_counter(), state.num_input_tokens_seen or 0)

            def on_step_end(self, args, state, control, **kwargs):
                self.bar.update(state.global_step - self.bar.n)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if self.bar is None:
                    return
                elapsed = time.perf_counter() - self.start[0]
                tokens = (state.num_input_tokens_seen or 0) - self.start[1]
                postfix = {"tok/s": f"{tokens / elapsed:.0f}" if elapsed > 0 else "-"}
                for key, name in (("loss", "loss"), ("eval_loss", "val_loss")):
                    if key in (logs or {}):
                        postfix[name] = f"{logs[key]:.4f}"
                self.bar.set_postfix(postfix, refresh=True)

            def on_train_end(self, args, state, control, **kwargs):
                if self.bar is not None:
                    self.bar.close()

        return ProgressBar()


@contextlib.contextmanager
def _quiet_dataset_preparation():
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def padded_rows(config: TrainConfig) -> bool:
    """Whether a pass holds several unpacked rows, padded to the longest (one row a pass needs no padding)."""
    return not config.packing and config.batch_size > 1


def sampling_strategy(config: TrainConfig) -> str:
    """Which rows share a pass. Several unpacked rows a pass, accumulated: the rows of each step split into passes
    of balanced cost (transformers' ``BatchRebalanceSampler``: sorted by length, long rows in smaller passes), so a
    pass never holds only the longest rows, whose activations set the peak memory, and the largest step first
    (``LargestStepFirst`` in :func:`causal_rows_trainer`: a run out of memory fails at once); one pass a step:
    rows grouped by length (little padding); packed or one row a pass: a random order."""
    if not padded_rows(config):
        return "random"
    return "batch_rebalance" if config.grad_accum > 1 else "group_by_length"


def _sft_config(config: TrainConfig, checkpoints: Path, device: str, has_val: bool):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints), seed=config.seed, data_seed=config.seed,
        num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr(),
        lr_scheduler_type="cosine",  # under a time budget: budget_schedule
        warmup_steps=warmup_steps(config), weight_decay=0.0,
        max_length=config.max_length, packing=config.packing, packing_strategy="bfd",
        # Several unpacked rows a pass: which rows share one (sampling_strategy), lengths rounded up to a few sizes.
        train_sampling_strategy=sampling_strategy(config),
        pad_to_multiple_of=config.pad_to_multiple if padded_rows(config) else None,
        completion_only_loss=True, gradient_checkpointing=False,
        bf16=use_bf16(config.precision, device), use_cpu=device == "cpu",
        eval_strategy="steps" if has_val else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=2,
        logging_steps=config.logging_steps, logging_first_step=True, report_to=[],
        # Packed rows hold no padding, and the pad id is the end-of-turn token the records are full of.
        include_num_input_tokens_seen="all" if config.packing else "non_padding",
        disable_tqdm=True,  # our own bar instead (_ProgressBar)
        dataloader_num_workers=0, dataset_num_proc=None,
    )


def train_student(config: TrainConfig, train: list[dict], validation: list[dict], out_dir: str | Path,
                  program: str | None = None, model_id: str | None = None, resume: bool = True,
                  progress: bool = True, on_log: Callable[[dict, int], None] | None = None,
                  student_meta: dict[str, Any] | None = None) -> TrainResult:
    """Fine-tune ``config.student`` on chat records and write a student directory at ``out_dir``.

    A rerun with the same ``out_dir`` resumes from the latest checkpoint (``resume=False`` starts over).
    ``student_meta`` goes into ``kpdd.json`` beside the figures: the prompt format, the call mode (default: the
    format detected from the records, per-stage calls).
    """
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PrinterCallback,
        set_seed,
    )
    from transformers.trainer_utils import get_last_checkpoint

    from kpdd.finetune.student import ensure_base_model, new_model_id, write_student

    if not train:
        raise DataError("no training records to fine-tune on: no correct trace reached the trainer (check the "
                        "teacher, the metric, and for trace stores the chosen program and stages)")
    out_dir = Path(out_dir)
    if resume and (out_dir / STUDENT_FILE).is_file():
        logger.info("%s is already trained: kept (resume=False trains it again)", out_dir)
        return finished_result(out_dir)
    checkpoints = out_dir / CHECKPOINTS
    device = resolve_device(config.device)
    config = config.for_device(device)
    threads = use_torch_threads(config.torch_threads)
    allocator = allocator_in_use()
    logger.info("training on %s, %d torch threads, %s; memory allocator: %s", device, threads,
                precision_reason(config.precision, device), allocator)
    set_seed(config.seed)
    base = ensure_base_model(config.student)
    tokenizer = AutoTokenizer.from_pretrained(base)
    # bf16 weights where the hardware multiplies bf16: on CPU no autocast copy of every weight each pass, nor of
    # every weight gradient back; the optimizer keeps fp32 master weights there (kpdd.finetune.master_weights).
    # On GPUs, as TRL expects.
    dtype = torch.bfloat16 if device == "cuda" or use_bf16(config.precision, device) else torch.float32
    # Packed rows on CPU: each sequence attended causally on its own, no mask (kpdd.finetune.attention).
    attention = register_packed_attention() if device == "cpu" and config.packing else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation=attention)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    result = TrainResult(student_dir=out_dir, model_id=model_id or new_model_id(out_dir.name),
                         setup={"device": device, "torch_threads": threads, "allocator": allocator,
                                "precision": "bf16" if use_bf16(config.precision, device) else "fp32"})
    if config.val_limit and len(validation) > config.val_limit:
        import random

        validation = random.Random(config.seed).sample(validation, config.val_limit)
    checkpoint = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    budget = _TimeBudget(config.time_budget_s, checkpoint) if config.time_budget_s else None
    callbacks = [_Recorder(result, on_log)] + ([budget] if budget else [])
    if device == "cpu" and (trim := _ReturnFreedMemory()) is not None:
        callbacks.append(trim)
    with _quiet_dataset_preparation():  # TRL's tokenising and packing bars: the training bar is the one to show
        trainer = causal_rows_trainer()(
            model=model, processing_class=tokenizer, peft_config=peft_config,
            args=_sft_config(config, checkpoints, device, bool(validation)),
            train_dataset=Dataset.from_list(to_prompt_completion(train)),
            eval_dataset=Dataset.from_list(to_prompt_completion(validation)) if validation else None,
            callbacks=callbacks,
        )
    # With disable_tqdm the trainer prints every log dictionary; our bar shows the figures instead.
    trainer.remove_callback(PrinterCallback)
    if progress and is_main_process():  # one bar per launch, not one per process
        trainer.add_callback(_ProgressBar(f"train {out_dir.name}"))
    trainer.budget_clock = budget
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    seen_before = _tokens_seen(checkpoint)  # now: the checkpoint rotation may delete it during training
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    result.train_time_s = time.perf_counter() - start
    result.steps = trainer.state.global_step
    result.tokens = int(trainer.state.num_input_tokens_seen) - seen_before
    if validation and not any(h["step"] == result.steps and "train/val_loss" in h for h in result.history):
        result.val_loss = trainer.evaluate()["eval_loss"]  # the last periodic evaluation missed the final step
    _save(trainer, out_dir, config)
    if not is_main_process():  # under `accelerate launch`, the main process writes the student
        return result
    base_ref = config.student if config.lora else out_dir / WEIGHTS  # a full fine-tune is its own base
    meta = {"prompt_format": detect_format(train[0]["messages"]), **(student_meta or {})}
    write_student(out_dir, base=base_ref, adapter_subdir=ADAPTER if config.lora else None, program=program,
                  model_id=result.model_id, train={"config": asdict(config), **result.figures(), "setup": result.setup,
                                                   "records": {"train": len(train), "validation": len(validation)}},
                  **meta)
    if not config.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return result


class _ReturnFreedMemory:
    """A ``TrainerCallback`` that hands the memory the allocator holds free back to the system every ``every``
    steps, after each checkpoint and evaluation, and at the end: jemalloc's arenas are purged (the ``kpdd``
    command's allocator for training, :mod:`kpdd.cli.allocator`, which keeps freed pages until then), glibc's heap
    trimmed (``malloc_trim``). In between, a step's tensors reuse the pages the last step freed: returned at every
    step, they cost a page fault on each page, 2 GB a full fine-tuning step (a tenth of its time); never returned,
    a CPU training's batches, which take new shapes now and then, leave blocks no later request fits (glibc's heap
    grew by half in 30 minutes: docs/RESULTS.md). None where the allocator can do neither."""

    def __new__(cls, every: int = 25):
        import ctypes
        import ctypes.util

        from transformers import TrainerCallback

        loaded = ctypes.CDLL(None)  # the allocator this process runs on: jemalloc when it is preloaded
        if hasattr(loaded, "mallctl"):
            def give_back():
                loaded.mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))  # 4096: every arena
        else:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
            if not hasattr(libc, "malloc_trim"):
                return None

            def give_back():
                libc.malloc_trim(0)

        class ReturnFreedMemory(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % every == 0:
                    give_back()

            def on_save(self, args, state, control, **kwargs):
                give_back()

            def on_evaluate(self, args, state, control, **kwargs):
                give_back()

            def on_train_end(self, args, state, control, **kwargs):
                give_back()

        return ReturnFreedMemory()


BUDGET_FILE = "time_budget.json"


class _TimeBudget:
    """A ``TrainerCallback`` that ends training (with a checkpoint) once ``seconds`` of training have passed, counted
    across resumed runs: each checkpoint records the seconds trained up to it (:data:`BUDGET_FILE`), and a run that
    resumes from it starts its clock there. :meth:`fraction` drives the learning-rate schedule."""

    def __new__(cls, seconds: float, resume_from: str | None):
        from transformers import TrainerCallback

        before = 0.0
        if resume_from and (Path(resume_from) / BUDGET_FILE).is_file():
            before = json.loads((Path(resume_from) / BUDGET_FILE).read_text())["trained_s"]

        class TimeBudget(TrainerCallback):
            start: float | None = None

            def trained_s(self) -> float:
                return before + (time.perf_counter() - self.start if self.start is not None else 0.0)

            def fraction(self) -> float:
                return min(1.0, self.trained_s() / seconds)

            def on_train_begin(self, args, state, control, **kwargs):
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                # Under `accelerate launch` the processes must stop at the same step: one that went on alone
                # would wait forever for the others' gradients.
                if any_process(self.trained_s() >= seconds):
                    control.should_training_stop = control.should_save = True

            def on_save(self, args, state, control, **kwargs):
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if is_main_process() and checkpoint.is_dir():
                    (checkpoint / BUDGET_FILE).write_text(json.dumps({"trained_s": self.trained_s()}))

        return TimeBudget()


def budget_schedule(optimizer, clock, warmup: int):
    """Linear warm-up over ``warmup`` steps, then a cosine from the peak to zero over the budget's time
    (``clock.fraction()``: the share of the time budget spent, across resumed runs)."""
    import math

    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * clock.fraction()))

    return LambdaLR(optimizer, factor)


def finished_result(student_dir: Path) -> TrainResult:
    """The figures of a student trained earlier, from its ``kpdd.json``."""
    from kpdd.finetune.student import read_student

    ref = read_student(student_dir)
    figures = {key.removeprefix("train/"): value for key, value in ref.train.items() if key.startswith("train/")}
    return TrainResult(student_dir=Path(student_dir), model_id=ref.model_id, steps=int(figures.get("steps", 0)),
                       train_loss=figures.get("loss"), val_loss=figures.get("val_loss"),
                       first_loss=figures.get("first_loss"), tokens=int(figures.get("tokens", 0)),
                       train_time_s=figures.get("time_s", 0.0), setup=ref.train.get("setup", {}))


def _tokens_seen(checkpoint: str | None) -> int:
    """Tokens counted before a resume (the trainer's count continues from its saved state)."""
    from transformers import TrainerState
    from transformers.trainer import TRAINER_STATE_NAME

    if checkpoint is None or not (Path(checkpoint) / TRAINER_STATE_NAME).is_file():
        return 0
    return int(TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).num_input_tokens_seen or 0)


def _save(trainer, out_dir: Path, config: TrainConfig) -> None:
    """LoRA: the adapter alone (the base comes from ``config.student``). Full: a whole checkpoint. With the tokenizer.

    Every process calls this: under FSDP the weights are gathered from all of them; only the main one writes.
    """
    from transformers.trainer import TRAINING_ARGS_NAME

    target = out_dir / (ADAPTER if config.lora else WEIGHTS)
    trainer.save_model(str(target))
    (target / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle of the arguments: kpdd.json records them
