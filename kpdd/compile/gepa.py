"""GEPA that survives what its reflection LM says, resumes, and shows its candidates.

DSPy's own options do most of it: ``log_dir`` (GEPA's run directory: a rerun with it resumes from the last saved
state), ``max_metric_calls`` (the budget) and ``gepa_kwargs["callbacks"]`` (every candidate's val-set score,
written to ``trials.jsonl``). A proposal the reflection LM answers off-format is skipped and counted by
:class:`CountingProposer` (GEPA then proposes again), and a reflection LM that stopped answering ends the run.
"""

from __future__ import annotations

import dspy
from dspy.teleprompt.gepa import InstructionProposer

from kpdd.compile.optimize_log import OptimizeLog, digest

GEPA_DIR = "gepa"


class CountingProposer:
    """GEPA's built-in instruction proposer, with a failed proposal skipped and counted (an empty proposal, which
    GEPA passes over) instead of logged with its traceback."""

    def __init__(self, log: OptimizeLog):
        self.log, self.proposer = log, InstructionProposer()

    def __call__(self, candidate, reflective_dataset, components_to_update):
        self.log.step = "reflection"
        try:
            return self.proposer(candidate=candidate, reflective_dataset=reflective_dataset,
                                 components_to_update=components_to_update)
        except Exception as error:
            self.log.check_fatal(error)
            self.log.skip("proposal", error)
            return {}


class TrialRecorder:
    """A GEPA callback: each candidate scored on the val set is a trial (its instructions and score)."""

    def __init__(self, log: OptimizeLog):
        self.log = log

    def on_valset_evaluated(self, event) -> None:
        candidate = dict(event["candidate"])
        key = f"gepa-{event['candidate_idx']}-{digest(candidate)}"
        if any(t["key"] == key for t in self.log.trials):
            return
        scores = list(event["scores_by_val_id"].values())
        record = {"key": key, "candidate": event["candidate_idx"], "instruction_texts": list(candidate.values()),
                  "score": 100 * event["average_score"], "correct": sum(1 for s in scores if s >= 1),
                  "n": len(scores), "full_eval": len(scores) == event["total_valset_size"],
                  "parents": list(event["parent_ids"])}
        earlier = self.log.trial(key)
        self.log.add_trial(earlier | {"reused": True} if earlier else record, resumed=earlier is not None)

    def on_iteration_start(self, event) -> None:
        self.log.step = "evaluation"
        self.log.check_fatal()


def gepa_optimizer(metric, log: OptimizeLog, reflection_lm: dspy.LM, plan, valset_size: int, threads: int,
                   seed: int) -> dspy.GEPA:
    """``dspy.GEPA`` with ``plan.trials`` proposals' worth of metric calls (each evaluated on a minibatch of 3
    and, if better, on the val set), plus the seed's evaluation."""
    minibatch = 3
    calls = valset_size + plan.trials * (2 * minibatch + valset_size)
    log_dir = str(log.directory / GEPA_DIR) if log.directory else None
    return dspy.GEPA(metric=metric, reflection_lm=reflection_lm, max_metric_calls=calls,
                     reflection_minibatch_size=minibatch, instruction_proposer=CountingProposer(log),
                     num_threads=threads, seed=seed, log_dir=log_dir,
                     gepa_kwargs={"callbacks": [TrialRecorder(log)]})
