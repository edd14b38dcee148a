"""kpdd augment: program-checked variants of gold traces — sandbox-verified answers, matching questions, the
source's side of the split, resumable stores."""

import random

import pytest

from kpdd.compile.gold import augment
from kpdd.compile.gold import GoldTeacher
from kpdd.finetune.sft import build_sft_data, is_validation
from kpdd.compile.store import TraceStore, source_question_id
from kpdd.data import load_dataset
from kpdd.errors import ConfigError
from kpdd.sandbox.executor import execute_many
from kpdd.modules import build_program
from kpdd.run.augment import AugmentConfig, run_augment

EXAMPLES = load_dataset("gsm8k", "train", limit=40, seed=3)


def augmented(tmp_path, limit=40, **options):
    config = AugmentConfig(limit=limit, seed=3, out=str(tmp_path / "variants.jsonl"), **options)
    return run_augment(config, progress=False), TraceStore(config.store_path())


def a_source():
    """The first of EXAMPLES whose gold trace has a number to change."""
    teacher = GoldTeacher("kpdd-pot")
    for example, result in zip(EXAMPLES, teacher.sample_many(EXAMPLES)):
        if result.traces:
            source = augment.source_of(example, result.traces[0]["stages"])
            if augment.changeable(source):
                return source
    raise AssertionError("no changeable source among the examples")


def test_new_value_keeps_kind_and_magnitude():
    rng = random.Random(0)
    for _ in range(50):
        money, value = augment.new_value("$2.50", rng)
        assert money.startswith("$") and len(money.split(".")[1]) == 2 and 1.25 <= value <= 5.0
        percent, value = augment.new_value("80%", rng)
        assert percent.endswith("%") and value.is_integer() and 40 <= value < 100
        thousands, value = augment.new_value("1,200", rng)
        assert "," in thousands and 1000 <= value <= 2400 and value % 100 == 0
        whole, value = augment.new_value("36", rng)
        assert whole.isdigit() and len(whole) == 2 and value != 36
    assert augment.new_value("1", rng) is None and augment.new_value("2019", rng) is None
    assert augment.new_value("three", rng) is None


def test_variant_programs_rerun_to_their_recorded_answers(tmp_path):
    stats, store = augmented(tmp_path)
    traces = store.traces()
    assert stats["covered"] >= 0.6 * stats["questions"] and len(traces) > stats["covered"]
    programs = [t["stages"][-1]["outputs"]["program"] for t in traces]
    for trace, run in zip(traces, execute_many(programs)):
        assert run.error is None and run.value == pytest.approx(trace["answer"])
        assert trace["answer"] == trace["gold"] and trace["answer"] >= 0 and float(trace["answer"]).is_integer()
        assert trace["teacher"] == "augment" and trace["meta"]["source_question_id"] != trace["question_id"]
        program = trace["stages"][-1]["outputs"]["program"]
        for change in trace["meta"]["substitution"]:
            assert change["new"] in trace["question"] and f"{change['variable']} = " in program
        assert all(s["inputs"]["question"] == trace["question"] for s in trace["stages"])


def test_variant_stages_are_the_gold_teachers_own_for_the_new_question(tmp_path):
    _, store = augmented(tmp_path, limit=10)
    trace = store.traces()[0]
    core, key_points = augment.gold_language.core_question_and_key_points(trace["question"])
    assert [s["predictor"] for s in trace["stages"]] == ["key_points.core", "key_points.info", "solve"]
    assert trace["stages"][0]["outputs"]["core_question"] == core
    assert trace["stages"][1]["outputs"]["key_points"] == key_points == trace["stages"][2]["inputs"]["key_points"]


def test_a_question_that_no_longer_matches_its_program_is_rejected():
    source = a_source()
    variant = augment.candidates(source, seed=0, start=0, count=1)[0]
    assert augment.check_variant(source, variant) is None
    change = variant.changes[0]
    wrong = str(int(change.value) + 1) if change.value.is_integer() else f"{change.value + 1:.2f}"
    tampered = augment.Variant(variant.source_id, variant.question[: change.start] + wrong
                               + variant.question[change.start + len(change.new):], variant.program, variant.changes)
    assert augment.check_variant(source, tampered).startswith("question mismatch")
    unchanged = augment.Variant(variant.source_id, source.example.question, variant.program, variant.changes)
    assert augment.check_variant(source, unchanged).startswith("question mismatch")


def test_variants_stay_on_their_sources_side_of_the_split(tmp_path):
    _, store = augmented(tmp_path)
    traces = store.traces()
    for trace in traces:
        source = trace["meta"]["source_question_id"]
        assert source_question_id(trace["question_id"]) == source
        for seed in range(5):
            assert is_validation(trace["question_id"], 0.3, seed) == is_validation(source, 0.3, seed)
    data = build_sft_data(traces, build_program("kpdd-pot"), val_fraction=0.3, seed=1)["solve"]
    held_out = {s for s in {t["meta"]["source_question_id"] for t in traces} if is_validation(s, 0.3, 1)}
    validation_questions = {m["content"] for r in data["validation"] for m in r["messages"] if m["role"] == "user"}
    assert held_out and len(data["validation"]) == sum(t["meta"]["source_question_id"] in held_out for t in traces)
    assert not any(t["question"] in " ".join(validation_questions) for t in traces
                   if t["meta"]["source_question_id"] not in held_out)


def test_a_second_run_resumes_without_repeating_work(tmp_path):
    first, store = augmented(tmp_path, limit=20)
    lines = len(list(store.lines()))
    again, _ = augmented(tmp_path, limit=20)
    assert again["new_variants"] == 0 and len(list(store.lines())) == lines
    assert (again["traces"], again["covered"]) == (first["traces"], first["covered"])
    more, _ = augmented(tmp_path, limit=40)  # the 20 done are skipped, the other 20 are added
    assert more["questions"] == 40 and more["new_variants"] == more["traces"] - first["traces"]


def test_methods_with_prose_reasoning_are_refused():
    with pytest.raises(ConfigError, match="kpdd-cot.*prose"):
        augment.check_method("kpdd-cot")


def test_compile_augment_option_adds_a_variant_store(tmp_path):
    from kpdd.run.compile import CompileConfig, augmented_store

    assert augmented_store(CompileConfig(limit=10, out=str(tmp_path / "none")), progress=False) == []
    [path] = augmented_store(CompileConfig(limit=10, seed=3, augment=2, out=str(tmp_path / "c")), progress=False)
    traces = TraceStore(path).traces()
    assert traces and {t["teacher"] for t in traces} == {"augment"}
    assert max(sum(t["meta"]["source_question_id"] == s for t in traces)
               for s in {t["meta"]["source_question_id"] for t in traces}) <= 2
