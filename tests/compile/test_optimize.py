"""Teacher optimisation with DSPy optimizers on a real HTTP teacher; the optimised program saves and reloads."""

import itertools
import re
import uuid

import pytest
from scripted_teacher import ScriptedTeacher

from kpdd import jsonl
from kpdd.compile.gepa import GEPA_DIR
from kpdd.compile.optimize import budget, optimize
from kpdd.compile.optimize_log import DEMOS, TRIALS, OptimizeLog
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.errors import ConfigError, KpddError, LMUnavailableError, RegistryError
from kpdd.modules import build_program
from kpdd.modules.saved import load_program, save_program
from kpdd.run.traces import TracesConfig, run_traces

EXAMPLES = load_dataset("gsm8k", "train", limit=8, seed=21)
ANSWERS = {e.question: e.answer for e in EXAMPLES}


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
    assert stats.questions == 4 and server.requests > before


def test_mipro_light_compiles_on_the_teacher(teacher):
    _, lm = teacher
    optimized = optimize(build_program("direct"), lm, EXAMPLES[:6], "mipro", valset=EXAMPLES[6:], threads=2,
                         auto="light")
    assert optimized.solve.signature.instructions  # a proposed or kept instruction, and the program still runs


def test_unknown_optimizer():
    with pytest.raises(RegistryError, match="Did you mean 'mipro'"):
        optimize(build_program("direct"), None, [], "mipr")


def test_gepa_reflects_with_the_teacher_unless_told_otherwise(tmp_path):
    wrong = {e.question for e in EXAMPLES[:6:2]}  # imperfect minibatches, so GEPA reflects
    with ScriptedTeacher(ANSWERS, wrong=wrong) as server:
        log = OptimizeLog(tmp_path / "optimize")
        optimize(build_program("direct"), scripted_lm(server), EXAMPLES[:6], "gepa", log=log, threads=2, trials=1)
        assert any("new_instruction" in fields for fields in server.fields_asked)  # GEPA's reflection, asked
    assert log.trials


def test_gepa_compiles_with_a_reflection_lm(teacher):
    _, lm = teacher
    optimized = optimize(build_program("direct"), lm, EXAMPLES[:4], "gepa", valset=EXAMPLES[4:], reflection_lm=lm,
                         threads=2, auto="light")
    assert optimized.solve.signature.instructions


# Whatever the LM says: off-format answers, timeouts, a server that dies; resumed from the run directory ---------

def scripted_lm(server, name: str | None = None, **kwargs):
    """A teacher on ``server`` without DSPy's response cache, so every call a run makes reaches the server; a rerun
    names the same model (its written proposals are the prompt model's)."""
    return teacher_lm(name or f"openai/scripted-{uuid.uuid4().hex}", api_base=server.url, cache=False, **kwargs)


def test_mipro_skips_and_counts_proposals_it_cannot_parse(tmp_path):
    faults = {"proposed_instruction": "off-format", "summary": "off-format"}
    program = build_program("direct")
    with ScriptedTeacher(ANSWERS, field_faults=faults) as server:
        log = OptimizeLog(tmp_path / "optimize")
        optimized = optimize(program, scripted_lm(server), EXAMPLES, "mipro", log=log, threads=2, trials=3)
    plan = budget(len(EXAMPLES), trials=3)
    assert log.counts()["summary/unparseable"] == 1
    assert log.counts()["instruction/unparseable"] == plan.instructions - 1  # one predictor, its own instruction kept
    assert optimized.solve.signature.instructions == program.solve.signature.instructions
    assert len(log.trials) == plan.trials + 1 and log.trials[0]["full_eval"]  # the unoptimised program, then each
    written = list(jsonl.read(tmp_path / "optimize" / TRIALS))  # each candidate once (a repeat reuses its score)
    assert [t["key"] for t in written] == list(dict.fromkeys(t["key"] for t in log.trials))
    assert all(t["instructions"] == [0] and t["demo_sets"][0] in range(plan.candidates) for t in log.trials)
    assert log.summary()["score_optimized"] >= log.summary()["score_unoptimized"]


def test_mipro_counts_proposals_that_time_out_and_goes_on(tmp_path):
    with ScriptedTeacher(ANSWERS, field_faults={"proposed_instruction": "slow"}, slow_s=2.0) as server:
        log = OptimizeLog(tmp_path / "optimize")
        optimize(build_program("direct"), scripted_lm(server, timeout=0.5, num_retries=0), EXAMPLES, "mipro",
                 log=log, threads=2, trials=2)
    assert log.counts()["instruction/timeout"] == budget(len(EXAMPLES)).instructions - 1


def test_mipro_server_dying_while_proposing_is_one_line_and_the_rerun_keeps_the_bootstrap(tmp_path):
    work, name = tmp_path / "optimize", f"openai/scripted-{uuid.uuid4().hex}"
    with ScriptedTeacher(ANSWERS, field_faults={"proposed_instruction": "die"}) as server:
        port = server.server.server_port
        with pytest.raises(LMUnavailableError, match=r"has not answered for .*; stopped with the optimizer's work so "
                                                     r"far in .*optimize: start its server again, then rerun"):
            optimize(build_program("direct"), scripted_lm(server, name, num_retries=0), EXAMPLES, "mipro",
                     log=OptimizeLog(work, server_gone_s=0.0), threads=2, trials=2)
    assert len(list(jsonl.read(work / DEMOS))) == 1 and not (work / TRIALS).exists()
    with ScriptedTeacher(ANSWERS, port=port) as back:
        optimize(build_program("direct"), scripted_lm(back, name), EXAMPLES, "mipro", log=OptimizeLog(work),
                 threads=2, trials=2)
    first_proposal = next(i for i, fields in enumerate(back.fields_asked) if "proposed_instruction" in fields)
    asked_before = {f for fields in back.fields_asked[:first_proposal] for f in fields}
    assert "answer" not in asked_before and "summary" not in asked_before  # neither bootstrap nor summary again
    assert len(list(jsonl.read(work / DEMOS))) == 1


def test_mipro_rerun_resumes_every_step_from_the_run_directory(tmp_path):
    work, name = tmp_path / "optimize", f"openai/scripted-{uuid.uuid4().hex}"
    off = {EXAMPLES[1].question, EXAMPLES[6].question}  # one in the bootstrap's questions, one in the val set's
    with ScriptedTeacher(ANSWERS, off_format=off, field_faults={"summary": "off-format"}) as server:
        first_log = OptimizeLog(work)
        first = optimize(build_program("direct"), scripted_lm(server, name), EXAMPLES, "mipro", log=first_log,
                         threads=2, trials=3)
    with ScriptedTeacher(ANSWERS) as server:
        log = OptimizeLog(work)
        again = optimize(build_program("direct"), scripted_lm(server, name), EXAMPLES, "mipro", log=log, threads=2,
                         trials=3)
        assert server.requests == 0, server.fields_asked  # demos, proposals and every trial score come from the files
    assert again.dump_state() == first.dump_state()
    assert log.trials and all(t.get("reused") for t in log.trials)
    # What the first run skipped is counted again from the files, step by step.
    assert {k.split("/")[0] for k in first_log.counts()} == {"bootstrap", "summary", "trials"}
    assert log.counts() == first_log.counts()


def test_bootstrap_skips_off_format_questions_and_resumes_without_asking(tmp_path):
    work = tmp_path / "optimize"
    off = {EXAMPLES[0].question, EXAMPLES[1].question}
    with ScriptedTeacher(ANSWERS, off_format=off) as server:
        log = OptimizeLog(work)
        first = optimize(build_program("pot"), scripted_lm(server), EXAMPLES, "bootstrap-fewshot", log=log, demos=2)
    assert log.counts()["bootstrap/failed questions"] == 2
    assert log.counts()["bootstrap/unparseable answers"] >= 2
    assert all(d.question not in off for d in first.predictors()[0].demos if d.get("augmented"))
    with ScriptedTeacher(ANSWERS) as server:
        again_log = OptimizeLog(work)
        again = optimize(build_program("pot"), scripted_lm(server), EXAMPLES, "bootstrap-fewshot",
                         log=again_log, demos=2)
        assert server.requests == 0
    assert again.dump_state() == first.dump_state()
    assert again_log.counts() == log.counts()


def test_gepa_skips_reflections_it_cannot_parse_and_records_its_candidates(tmp_path):
    work = tmp_path / "optimize"
    wrong = {e.question for e in EXAMPLES[:6:2]}  # imperfect minibatches, so GEPA reflects
    with ScriptedTeacher(ANSWERS, wrong=wrong) as server, \
            ScriptedTeacher({}, field_faults={"new_instruction": "off-format"}) as reflection:
        log = OptimizeLog(work)
        optimized = optimize(build_program("direct"), scripted_lm(server), EXAMPLES[:6], "gepa", log=log,
                             reflection_lm=scripted_lm(reflection), threads=2, trials=2)
        assert reflection.requests >= 1
        asked = server.requests
    assert log.counts().get("proposal/unparseable", 0) >= 1
    assert optimized.solve.signature.instructions  # the seed candidate, as nothing better was proposed
    trials = list(jsonl.read(work / TRIALS))
    assert trials[0]["candidate"] == 0 and trials[0]["full_eval"] and trials[0]["n"] == 3
    assert (work / GEPA_DIR / "gepa_state.bin").is_file()  # GEPA's own state: a rerun resumes from it
    with ScriptedTeacher(ANSWERS) as server, ScriptedTeacher({}) as reflection:
        log = OptimizeLog(work)
        again = optimize(build_program("direct"), scripted_lm(server), EXAMPLES[:6], "gepa", log=log,
                         reflection_lm=scripted_lm(reflection), threads=2, trials=2)
        assert server.requests < asked / 2  # GEPA went on from its saved state, with what was left of the budget
    assert again.dump_state() == optimized.dump_state()
    assert log.summary()["score_unoptimized"] == trials[0]["score"]


def test_optimizer_that_gives_up_is_one_line_naming_the_step_and_the_fix():
    with ScriptedTeacher(ANSWERS, faults=itertools.repeat("garbage")) as server:
        with pytest.raises(KpddError) as error:
            optimize(build_program("direct"), scripted_lm(server, num_retries=0), EXAMPLES, "mipro", threads=2,
                     trials=2)
    assert "\n" not in str(error.value)
    assert re.search(r"(mipro|--prompt-model|--teacher|server)", str(error.value))
