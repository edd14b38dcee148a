"""Each optimizer end to end on a real LM: the shipped SmolLM2 checkpoint through the local engine as teacher,
prompt model and reflection LM, at the smallest settings that run every step. A 135M model answers DSPy's
formats off-format more often than not, which is the point: the run must end with a program and its counts.
"""

import dspy
import pytest

from kpdd import jsonl
from kpdd.compile.optimize import optimize
from kpdd.compile.optimize_log import DEMOS, PROPOSALS, TRIALS, OptimizeLog
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.finetune.student import DEFAULT_BASE
from kpdd.modules import build_program

pytestmark = pytest.mark.slow

EXAMPLES = load_dataset("multiarith", limit=4, seed=5)  # short questions: short prompts on a CPU


@pytest.fixture(scope="module")
def smollm2():
    # Short answers keep each call to seconds; the direct program's answer is one number.
    return teacher_lm(f"local:{DEFAULT_BASE}", max_tokens=32)


@pytest.fixture(autouse=True)
def one_call_per_answer():
    """No JSON-adapter retry of an answer that did not parse: half the calls, the same steps."""
    with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        yield


def test_bootstrap_fewshot_on_smollm2(tmp_path, smollm2):
    log = OptimizeLog(tmp_path)
    optimized = optimize(build_program("direct"), smollm2, EXAMPLES[:2], "bootstrap-fewshot", log=log, demos=1)
    assert len(optimized.solve.demos) == 1  # a bootstrapped demo, or the labelled one that fills the slot
    assert len(list(jsonl.read(tmp_path / DEMOS))) == 1 and len(log.trials) == 1


def test_mipro_on_smollm2(tmp_path, smollm2):
    log = OptimizeLog(tmp_path)
    optimized = optimize(build_program("direct"), smollm2, EXAMPLES[:3], "mipro", log=log, trials=1, threads=2)
    assert optimized.solve.signature.instructions
    proposals = list(jsonl.read(tmp_path / PROPOSALS))
    assert {p["kind"] for p in proposals} == {"summary", "instruction"}  # each written, parsed or skipped
    skipped = sum(1 for p in proposals if p.get("skipped"))
    assert sum(v for k, v in log.counts().items() if k.split("/")[0] in ("summary", "instruction")) == skipped
    assert len(list(jsonl.read(tmp_path / TRIALS))) >= 1 and log.summary()["score_unoptimized"] is not None


def test_gepa_on_smollm2(tmp_path, smollm2):
    log = OptimizeLog(tmp_path)
    optimized = optimize(build_program("direct"), smollm2, EXAMPLES, "gepa", log=log, reflection_lm=smollm2,
                         trials=1, threads=2)
    assert optimized.solve.signature.instructions
    trials = list(jsonl.read(tmp_path / TRIALS))
    assert trials[0]["candidate"] == 0 and trials[0]["n"] == 2  # the seed, on the val half
