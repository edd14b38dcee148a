"""MIPROv2 that survives what a real LM says, and resumes: DSPy's optimizer with its three steps hooked.

1. Bootstrap: DSPy's demonstration sets, written to ``demos.jsonl`` when made and read back by a rerun.
2. Proposal: DSPy's ``GroundedProposer`` asked one instruction at a time; a dataset summary or an instruction that
   cannot be parsed (or times out) is skipped and counted instead of ending the run. The first candidate of each
   predictor is its own instruction (DSPy replaces whatever was proposed for it), so it is not proposed at all.
3. Trials: each evaluation goes through :class:`CheckpointedEvaluate`, which writes the candidate (instruction and
   demo set per predictor) and its score, and answers a candidate an earlier run scored from ``trials.jsonl``.

The budget is DSPy's own ``auto=None`` mode: ``num_candidates`` demo sets and instructions, ``num_trials`` trials.
"""

from __future__ import annotations

import random
from typing import Any

import dspy
from dspy.propose import GroundedProposer
from dspy.propose.dataset_summary_generator import create_dataset_summary
from dspy.propose.grounded_proposer import TIPS
from dspy.teleprompt.mipro_optimizer_v2 import BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT, MIN_MINIBATCH_SIZE
from dspy.teleprompt.utils import get_signature

from kpdd.compile.optimize_log import (
    INSTRUCTION,
    RNG,
    SKIPPED,
    SUMMARY,
    OptimizeLog,
    OptimizerError,
    as_record,
    digest,
)

NAME = "mipro"


def model_name(lm: Any) -> str:
    return getattr(lm, "model", None) or type(lm).__name__


def rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class KpddMIPROv2(dspy.MIPROv2):
    """``dspy.MIPROv2`` writing its work to ``log`` as it is made. ``num_instruct_candidates`` may be fewer than
    the demo sets (DSPy's ``auto`` modes also propose half as many instructions as they bootstrap sets)."""

    def __init__(self, metric, log: OptimizeLog, num_instruct_candidates: int | None = None,
                 num_trials: int | None = None, program_aware: bool = True, **kwargs):
        super().__init__(metric, **kwargs)
        self.log, self.num_trials, self.program_aware = log, num_trials, program_aware
        if num_instruct_candidates is not None:
            self.num_instruct_candidates = num_instruct_candidates

    def compile(self, student, *, trainset, valset=None, **kwargs):
        trainset, valset = self._set_and_validate_datasets(trainset, valset)
        # DSPy's auto modes evaluate the whole val set unless it is large; its default minibatch (35) fails below.
        minibatch = len(valset) > MIN_MINIBATCH_SIZE
        return super().compile(student, trainset=trainset, valset=valset, num_trials=self.num_trials,
                               minibatch=minibatch, minibatch_size=min(35, len(valset)),
                               program_aware_proposer=self.program_aware, **kwargs)

    def _bootstrap_fewshot_examples(self, program, trainset, seed, teacher, **kwargs):
        self.log.step = "bootstrap"
        saved = self.log.demo_sets(NAME)
        if saved is not None:
            set_rng_state(self.rng, saved[RNG])
            return {int(p): [[dspy.Example(**d) for d in demos] for demos in sets]
                    for p, sets in saved["sets"].items()}
        sets = super()._bootstrap_fewshot_examples(program, trainset, seed, teacher, **kwargs)
        self.log.check_fatal()
        self.log.save_demo_sets(NAME, sets, rng_state(self.rng))
        return sets

    def _propose_instructions(self, program, trainset, demo_candidates, view_data_batch_size, program_aware_proposer,
                              data_aware_proposer, tip_aware_proposer, fewshot_aware_proposer,
                              num_instruct_candidates):
        self.log.step = "instruction proposal"
        prompt_model = model_name(self.prompt_model)
        proposer = GroundedProposer(
            prompt_model=self.prompt_model, program=program, trainset=trainset,
            view_data_batch_size=view_data_batch_size, use_dataset_summary=False, program_aware=program_aware_proposer,
            use_task_demos=fewshot_aware_proposer and bool(demo_candidates),
            num_demos_in_context=BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT, use_tip=tip_aware_proposer,
            set_tip_randomly=False, use_instruct_history=False, set_history_randomly=False, verbose=self.verbose,
            rng=self.rng, init_temperature=self.init_temperature)
        if data_aware_proposer:
            proposer.data_summary = self.log.proposal(SUMMARY, "dataset", prompt_model, lambda: create_dataset_summary(
                trainset=trainset, view_data_batch_size=view_data_batch_size, prompt_model=self.prompt_model))
            proposer.use_dataset_summary = proposer.data_summary is not None
        slots = min(num_instruct_candidates, max(len(demo_candidates[0]), 1) if demo_candidates else
                    num_instruct_candidates)
        candidates: dict[int, list[str]] = {}
        for i, predictor in enumerate(program.predictors()):
            candidates[i] = [get_signature(predictor).instructions]
            for demo_set in range(1, slots):
                tip = TIPS[self.rng.choice(list(TIPS))] if tip_aware_proposer else None
                proposer.use_tip = bool(tip)
                text = self.log.proposal(INSTRUCTION, f"{i}/{demo_set}", prompt_model,
                                         lambda i=i, predictor=predictor, demo_set=demo_set, tip=tip:
                                         proposer.propose_instruction_for_predictor(
                                             program=program, predictor=predictor, pred_i=i,
                                             demo_candidates=demo_candidates, demo_set_i=demo_set, trial_logs={},
                                             tip=tip))
                if text and text.strip() and text not in candidates[i]:
                    candidates[i].append(text)
        self.log.check_fatal()
        return candidates

    def _optimize_prompt_parameters(self, program, instruction_candidates, demo_candidates, evaluate, *args):
        self.log.step = "trials"
        checkpointed = CheckpointedEvaluate(evaluate, self.log, instruction_candidates, demo_candidates)
        best = super()._optimize_prompt_parameters(program, instruction_candidates, demo_candidates, checkpointed,
                                                   *args)
        if all(t.get("failed") or t.get("failed_examples") == t["n"] for t in self.log.trials):
            asked = sum(t["n"] for t in self.log.trials)
            raise OptimizerError(f"optimizer {NAME}: the trials step got no usable answer from the teacher (all "
                                 f"{asked} failed: unparseable, or an LM error); its work so far is kept in "
                                 f"{self.log.directory or 'memory'}: pass a stronger --teacher, or --optimizer none")
        return best


class CheckpointedEvaluate:
    """Stands in for MIPROv2's ``Evaluate``: each candidate's score is written with its instruction and demo set
    per predictor, and a candidate scored by an earlier run is answered from the log. A trial whose evaluation
    fails scores 0 (as DSPy scores it) and is counted."""

    def __init__(self, evaluate: dspy.Evaluate, log: OptimizeLog, instructions: dict[int, list[str]],
                 demo_sets: dict[int, list] | None):
        self.evaluate, self.log = evaluate, log
        self.instructions = instructions
        self.demo_set_ids = {i: [digest([as_record(d) for d in demos]) for demos in sets]
                             for i, sets in (demo_sets or {}).items()}

    def candidate(self, program: dspy.Module) -> dict[str, list]:
        instructions, demo_sets = [], []
        for i, predictor in enumerate(program.predictors()):
            text = get_signature(predictor).instructions
            instructions.append(self.instructions[i].index(text) if text in self.instructions[i] else text)
            demos = digest([as_record(d) for d in predictor.demos])
            ids = self.demo_set_ids.get(i, [])
            demo_sets.append(ids.index(demos) if demos in ids else None)
        return {"instructions": instructions, "demo_sets": demo_sets}

    def __call__(self, program: dspy.Module, devset: list, **kwargs) -> dspy.Prediction:
        self.log.check_fatal()
        candidate = self.candidate(program)
        key = digest([candidate, [(n, get_signature(p).instructions) for n, p in program.named_predictors()],
                      [as_record(e) for e in devset]])
        earlier = self.log.trial(key)
        if earlier is not None:
            self.log.add_trial(earlier | {"reused": True}, resumed=True)
            return dspy.Prediction(score=earlier["score"], results=[])
        texts = [get_signature(p).instructions for p in program.predictors()]
        record = {"key": key, **candidate, "instruction_texts": texts, "n": len(devset),
                  "full_eval": len(devset) == len(self.evaluate.devset)}
        before = self.log.counts()  # trials run one at a time: what is counted meanwhile is this trial's
        try:
            result = self.evaluate(program, devset=devset, **kwargs)
        except Exception as error:  # DSPy would log the traceback and score the trial 0
            self.log.check_fatal(error)
            self.log.skip("trial", error)
            self.log.add_trial(record | {"score": 0.0, "correct": 0, "failed": True,
                                         SKIPPED: self.log.counted_since(before)})
            return dspy.Prediction(score=0.0, results=[])
        self.log.check_fatal()
        failed = sum(1 for _, prediction, _ in result.results if not prediction.keys())
        correct = sum(1 for _, _, score in result.results if score)
        self.log.add_trial(record | {"score": result.score, "correct": correct, "failed_examples": failed,
                                     SKIPPED: self.log.counted_since(before)})
        return result


__all__ = ["CheckpointedEvaluate", "KpddMIPROv2"]
