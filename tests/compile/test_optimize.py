"""Teacher optimisation with DSPy optimizers on a real HTTP teacher; the optimised program saves and reloads."""

import uuid

import pytest
from scripted_teacher import ScriptedTeacher

from kpdd.compile.optimize import optimize
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.errors import ConfigError, RegistryError
from kpdd.modules import build_program
from kpdd.modules.saved import load_program, save_program
from kpdd.run.traces import TracesConfig, run_traces

EXAMPLES = load_dataset("gsm8k", "train", limit=8, seed=21)


@pytest.fixture
def teacher():
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, wrong={EXAMPLES[0].question}) as server:
        yield server, teacher_lm(f"openai/scripted-{uuid.uuid4().hex}", api_base=server.url)


def test_bootstrap_fewshot_keeps_correct_demos_and_round_trips(tmp_path, teacher):
    server, lm = teacher
    program = build_program("kpdd-pot")
    optimized = optimize(program, lm, EXAMPLES, "bootstrap-fewshot", demos=2)
    assert not program.solve.demos  # the input program is left as it was
    demos = optimized.solve.demos
    assert 1 <= len(demos) <= 2 and all(d.question != EXAMPLES[0].question for d in demos if "program" in d)
    save_program(optimized, tmp_path / "teacher", "kpdd-pot", optimizer="bootstrap-fewshot")
    loaded = load_program(tmp_path / "teacher")
    as_dict = lambda demo: demo if isinstance(demo, dict) else demo.toDict()  # noqa: E731  (loaded demos are dicts)
    assert [as_dict(d) for d in loaded.solve.demos] == [as_dict(d) for d in demos]
    with pytest.raises(ConfigError, match="holds a 'kpdd-pot' program, not 'cot'"):
        load_program(tmp_path / "teacher", "cot")

    # Traces from the saved, optimised program: its demos are in the prompts the teacher receives.
    before = server.requests
    stats = run_traces(TracesConfig(program="kpdd-pot", teacher=lm.model, api_base=server.url, limit=4, seed=3,
                                    teacher_program=str(tmp_path / "teacher"), out=str(tmp_path / "t.jsonl")),
                       progress=False)
    assert stats["questions"] == 4 and server.requests > before


def test_mipro_light_compiles_on_the_teacher(teacher):
    _, lm = teacher
    optimized = optimize(build_program("direct"), lm, EXAMPLES[:6], "mipro", valset=EXAMPLES[6:], threads=2,
                         auto="light")
    assert optimized.solve.signature.instructions  # a proposed or kept instruction, and the program still runs


def test_unknown_optimizer_and_gepa_without_reflection_lm():
    with pytest.raises(RegistryError, match="Did you mean 'mipro'"):
        optimize(build_program("direct"), None, [], "mipr")
    with pytest.raises(ConfigError, match="needs a reflection LM"):
        optimize(build_program("direct"), None, [], "gepa")


def test_gepa_compiles_with_a_reflection_lm(teacher):
    _, lm = teacher
    optimized = optimize(build_program("direct"), lm, EXAMPLES[:4], "gepa", valset=EXAMPLES[4:], reflection_lm=lm,
                         threads=2, auto="light")
    assert optimized.solve.signature.instructions
