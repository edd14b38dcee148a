"""kpdd augment: program-checked variants of gold traces — sandbox-verified answers, matching questions, the
source's side of the split, resumable stores."""

import random

import dspy
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
    source_example = next(e for e in EXAMPLES if e.id == trace["meta"]["source_question_id"])
    (gold,) = GoldTeacher("kpdd-pot").sample(source_example).traces
    reads = augment.source_of(source_example, gold["stages"]).builder.declared
    core, key_points = augment.gold_language.core_question_and_key_points(trace["question"], reads)
    assert len(key_points) == len(gold["stages"][1]["outputs"]["key_points"])  # the same facts, new numbers
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


# Variants that are right ---------------------------------------------------------------------------------

TRAIN = {e.question.split(".")[0]: e for e in load_dataset("gsm8k", "train")}


def source(opening: str) -> augment.Source:
    example = TRAIN[opening]
    (trace,) = GoldTeacher("kpdd-pot").sample(example).traces
    return augment.source_of(example, trace["stages"])


def changeable_texts(source_: augment.Source) -> list[str]:
    return [source_.builder.quantities[i].text for group in source_.changeable for i in group]


def test_a_number_read_where_a_result_may_be_meant_stays_with_what_the_result_is_made_of():
    """Mary's '$20 fine' is read where the rationale meant the $20 a week of trash bins ($10 * 2), and that result
    where it meant the fine: the fine, the $10 and the 2 stay; the recycling bin's $5 and the 18 % may change."""
    mary = source("Mary is paying her monthly garbage bill for a month with exactly four weeks")
    assert list(mary.builder.ambiguous.values()) == ["mary_weekly_dollars"]
    assert changeable_texts(mary) == ["$5", "18%"]


def test_a_step_that_turns_negative_is_rejected():
    """40 % of 50 games won, 20 to play, 30 % to win: the program's 'wins still needed' goes below zero."""
    team = source("A basketball team played 40 games and won 70% of the games")
    changes = [augment.Change(q.start, q.end, q.text, new, float(new.rstrip("%")), team.builder.declared[k])
               for k, q in enumerate(team.builder.quantities) for new in [{"40": "50", "70%": "90%", "10": "20",
                                                                            "60%": "30%"}[q.text]]]
    variant = augment.make_variant(team, changes)
    assert augment.variant_problem(team, variant, augment.step_values(variant.program)["ans"]) == \
        "a step turns negative"


def test_a_literal_the_old_numbers_produced_makes_a_question_unchangeable():
    """Michael's age (8) is worked out in the rationale and stays a literal: no variant could update it."""
    michael = source("Michael has two brothers")
    assert "+ 8" in michael.program and augment.unexplained_literal(michael) == "8"
    assert augment.unchangeable(michael) == "program keeps a literal the question does not explain"
    assert augment.unexplained_literal(source("A chocolate box contains 200 bars")) is None  # '1/4' explains 4
    for fixed in ("In 6 months Bella and Bob will be celebrating their 4th anniversary",  # 4 * 12, 2 * 12 months
                  "The ratio of boys to girls in a family is 5:7"):  # 5 / (5 + 7) of the children
        assert augment.unexplained_literal(source(fixed)) is None
    tracy = source("Tracy, Michelle, and Kati take a road trip that is a total of 1000 miles")
    assert "x_miles = 98" in tracy.program and augment.unexplained_literal(tracy) == "98"  # solved for, not given


def test_a_number_in_two_roles_stays():
    """'his 4 friends take 1/4 of the bars': the 4 is also the fraction's denominator; 200 may change."""
    thomas = source("A chocolate box contains 200 bars")
    assert "4" not in changeable_texts(thomas) and "200" in changeable_texts(thomas)


def test_a_number_written_twice_changes_as_one():
    example = dspy.Example(id="pets", answer=12.0, question="Tom has 2 dogs and 2 cats. Each animal eats 3 cans of "
                           "food a day. How many cans do his pets eat a day?",
                           rationale="Tom has 2 + 2 = <<2+2=4>>4 animals.\nThey eat 4 * 3 = <<4*3=12>>12 cans a day."
                           ).with_inputs("question")
    (trace,) = GoldTeacher("kpdd-pot").sample(example).traces
    pets = augment.source_of(example, trace["stages"])
    assert changeable_texts(pets) == ["2", "2", "3"]
    for seed in range(5):
        twos = [c.new for c in augment.draw_changes(pets, random.Random(seed)) if c.old == "2"]
        assert len(twos) == 2 and twos[0] == twos[1]


def test_the_parts_and_total_of_a_stated_sum_stay():
    """'7 brothers. 3 of them ..., 1 of them ..., 1 ..., another 2 of them': no new value keeps the sum."""
    santana = source("Santana has 7 brothers")
    quantities = santana.builder.quantities
    in_the_sum = [q.text for k, q in enumerate(quantities) if augment._in_a_sum(k, quantities, santana.example.question)]
    assert in_the_sum == ["7", "3", "1", "1", "2"]
    assert changeable_texts(santana) == [] and augment.unchangeable(santana) is not None


def test_a_count_that_is_no_longer_whole_is_rejected():
    thomas = source("A chocolate box contains 200 bars")
    change = next(c for c in augment.draw_changes(thomas, random.Random(0)) if c.old == "200")
    halves = augment.make_variant(thomas, [augment.Change(change.start, change.end, "200", "210", 210.0,
                                                          change.variable)])
    steps = augment.step_values(halves.program)
    assert any(not v.is_integer() for v in steps.values())  # 210 / 4 bars: 52.5
    value = steps["ans"]
    assert augment.variant_problem(thomas, halves, value) in {"a count is not whole", "answer not a whole number"}
    whole = augment.make_variant(thomas, [augment.Change(change.start, change.end, "200", "400", 400.0,
                                                         change.variable)])
    assert augment.variant_problem(thomas, whole, augment.step_values(whole.program)["ans"]) is None


def test_an_answer_left_at_the_sources_is_rejected():
    variant = augment.candidates(a_source(), seed=0, start=0, count=1)[0]
    assert augment.variant_problem(a_source(), variant, a_source().example.answer) == "answer unchanged"


def test_step_values_compute_the_programs_arithmetic_without_running_it():
    assert augment.step_values("a = 3\nb = a * 2 / 4\nans = -b + 1") == {"a": 3.0, "b": 1.5, "ans": -0.5}
    assert augment.step_values("import os\nans = 1") is None and augment.step_values("ans = a + 1") is None
    assert augment.read_by_answer("a = 3\nb = 4\nc = b * 2\nans = c + 1") == {"b", "c"}


def test_a_question_with_an_ambiguous_comparative_is_not_varied():
    """'The apples were two times cheaper than the oranges' reads as half the price per kilogram or as half the
    oranges' total: the variant would inherit the source's guess."""
    betty = source("Betty bought 1 kg of oranges and 3 kg of apples")
    assert augment.unchangeable(betty) == "question has an ambiguous comparative ('N times cheaper')"
    assert augment.unchangeable(source("Misty's favorite number is 3 times smaller than Glory's favorite number"))
    assert augment.unchangeable(source("A chocolate box contains 200 bars")) is None
    for clear in ("costs three times as much as", "is 3 times older than", "2 times more than"):
        assert not augment._AMBIGUOUS_COMPARATIVE.search(clear)


def test_a_source_reading_that_leaves_out_a_duration_or_a_group_size_is_not_varied():
    """Henry takes '9 pills a day for 14 days' and the source's answer prices 9 pills; Patty's 'brother and sister'
    each do 4 chores a week and the source's answer pays for 4: a variant would inherit either reading."""
    henry = source("Henry took 9 pills a day for 14 days")
    assert augment._unread_duration(henry) == "14"
    assert augment.unchangeable(henry).startswith("program leaves out a duration")
    patty = source("Patty decides that to convince her brother and sister to do her chores in exchange for cookies")
    assert augment.unchangeable(patty).startswith("question counts per member of a group")
    assert augment._unread_duration(source("A chocolate box contains 200 bars")) is None
    for counted in ("Jessie invited 4 friends over. How many will each person get?",
                    "There are 5 of them in total. If each member wants one pound"):
        assert augment._MEMBER.search(counted) and augment._COUNTED_PEOPLE.search(counted)


def test_a_count_beyond_its_unit_and_a_number_read_again_for_an_implied_count_are_caught():
    """'9 days a week' is no week; Erwin's '2 chocolates on weekdays' is read again for the 2 days of 'weekends'."""
    hank = source("Hank reads the newspaper every morning, 5 days a week for 30 minutes")
    fives = [augment.Change(q.start, q.end, q.text, "9", 9.0, hank.builder.declared.get(k, ""))
             for k, q in enumerate(hank.builder.quantities) if q.text == "5"]
    assert augment.check_variant(hank, augment.make_variant(hank, fives)) == \
        "a count exceeds the unit it is per ('9 days a week')"
    sixes = [augment.Change(c.start, c.end, c.old, "6", 6.0, c.variable) for c in fives]
    assert augment.check_variant(hank, augment.make_variant(hank, sixes)) is None
    erwin = source("Erwin eats 2 chocolates on weekdays and 1 chocolate on weekends")
    assert "2" not in changeable_texts(erwin)


def test_fifty_percent_and_the_parts_of_a_two_part_sum_stay():
    """Bill's plan: the government pays '50%', which is also what Bill pays, so a new value would show which one the
    program computes. Randy: 'in 5 days ... for 2 days and then ... for another 3 days' is a stated sum."""
    bill = source("Bill is buying healthcare on an exchange")
    assert "50%" not in changeable_texts(bill)
    randy = source("Farmer Randy has 1700 acres of cotton he needs to have planted in 5 days")
    assert not {"5", "2", "3"} & set(changeable_texts(randy)) and "1700" in changeable_texts(randy)
