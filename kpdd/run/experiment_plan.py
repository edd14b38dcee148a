"""The GPU experiment's recipes, in priority order, and the time each is expected to take.

A recipe is one student: a program, its training data (gold traces, optionally with program-checked variants),
full or LoRA fine-tuning, and how many students serve its stages. The estimate of a run uses only what is known
before it starts: its SFT tokens (counted with the student's tokenizer), its evaluation calls, and the
throughputs, which start as the assumptions below and are replaced by what the previous runs measured. The
driver starts a run only if its estimate fits the time left, so every run finishes whole or not at all.
No heavy imports here: docs/GPU-EXPERIMENT.md's time plan is computed with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# H200 SXM dense bf16 peak by the vendor's datasheet: the default peak MFU is quoted against (`--peak-tflops`; a
# large bf16 matrix product reaches about 80 % of it, so MFU against that ceiling is about 1.25x higher).
H200_BF16_PEAK_FLOPS = 989e12
SMOLLM2_135M_PARAMS = 134.5e6

METHOD_ORDER = ("kpdd-pot", "pot", "cot", "kpdd-cot", "socratic", "direct")


@dataclass(frozen=True)
class Recipe:
    """One student to train and evaluate."""

    program: str
    variants: bool = False          # gold traces plus `kpdd augment`'s program-checked variants
    student_calls: str | None = None  # "one" | "per-stage" where the students' format offers the choice
    lora: bool = False

    @property
    def name(self) -> str:
        parts = [self.program, "gold+variants" if self.variants else "gold"]
        if self.student_calls:
            parts.append(f"{self.student_calls}-call" if self.student_calls == "one" else self.student_calls)
        parts.append("lora" if self.lora else "full")
        return "_".join(parts)


def plan_recipes(augment: bool, student_calls: bool) -> list[Recipe]:
    """The runs in priority order: KPDD-PoT, PoT and CoT first, then the ablations and the other methods. Without
    `kpdd augment` the variant runs fall back to gold traces and duplicates drop out; with a `student_calls` option
    KPDD-PoT is also trained one student per stage."""
    calls = "one" if student_calls else None
    wanted = [Recipe("kpdd-pot", augment, calls), Recipe("pot", augment, calls), Recipe("cot", augment, calls),
              Recipe("kpdd-pot", False, calls)]
    if student_calls:
        wanted.append(Recipe("kpdd-pot", augment, "per-stage"))
    wanted += [Recipe(p, False, calls) for p in ("kpdd-cot", "socratic", "direct")]
    recipes: list[Recipe] = []
    for recipe in wanted:
        if recipe not in recipes:
            recipes.append(recipe)
    return recipes


@dataclass
class Rates:
    """Throughputs the estimates use: assumptions at first, then what the runs measured."""

    train_tokens_per_s: float
    decode_step_s: float            # one decoding step of a whole batch in the transformers engine
    fixed_s_per_run: float          # model loads, MLflow, program set-up, saving
    measured: dict[str, bool] = field(default_factory=lambda: {"train": False, "decode": False})

    @classmethod
    def assumed(cls, device: str, peak_flops: float = H200_BF16_PEAK_FLOPS) -> Rates:
        if device == "cpu":  # measured on a 2-core CPU: 123-157 tokens/s full/LoRA
            return cls(train_tokens_per_s=120.0, decode_step_s=0.06, fixed_s_per_run=15.0)
        # A GPU, assumed (docs/GPU-EXPERIMENT.md): 6 N FLOPs per trained token at 10 % MFU (1.2e5 tokens/s at an
        # H200's peak); a batched decoding step of a 135M model is bound by kernel launches and Python, about 35 ms
        # up to a batch of 1,024.
        return cls(train_tokens_per_s=0.10 * peak_flops / (6 * SMOLLM2_135M_PARAMS),
                   decode_step_s=0.035, fixed_s_per_run=20.0)


@dataclass(frozen=True)
class Workload:
    """What a run has to do, known before it starts."""

    train_tokens: int      # SFT tokens per epoch, prompt and completion (both pass through the model)
    epochs: float
    eval_calls: int        # student calls over all evaluation questions
    max_new_tokens: int    # the per-call cap; a batch decodes until its longest row stops
    engine_batch: int

    def train_s(self, rates: Rates) -> float:
        return self.train_tokens * self.epochs / rates.train_tokens_per_s

    def eval_s(self, rates: Rates) -> float:
        batches = -(-self.eval_calls // self.engine_batch)
        return batches * self.max_new_tokens * rates.decode_step_s

    def total_s(self, rates: Rates) -> float:
        return self.train_s(rates) + self.eval_s(rates) + rates.fixed_s_per_run


def new_tokens_cap(p99_completion_tokens: int, max_tokens: int) -> int:
    """The per-call cap on new tokens: a batch decodes until its longest row stops, so a student that rambles
    costs the cap; 1.25x the 99th percentile of the gold completions leaves room for any right answer."""
    return min(max_tokens, max(32, round(1.25 * p99_completion_tokens)))


def mfu(tokens_per_s: float, params: float = SMOLLM2_135M_PARAMS, peak: float = H200_BF16_PEAK_FLOPS) -> float:
    """Model FLOPs utilisation of training: 6 N FLOPs per token (forward + backward), attention left out."""
    return 6 * params * tokens_per_s / peak
