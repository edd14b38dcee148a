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
    traced = sum(bool(r.traces) for r in GoldTeacher("kpdd-pot").sample_many(EXAMPLES))
    assert traced >= 0.5 * stats.questions  # the gold teacher drops the questions it cannot read faithfully
    assert stats.covered >= 0.75 * traced and len(traces) > stats.covered
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
    assert again.new_variants == 0 and len(list(store.lines())) == lines
    assert (again.traces, again.covered) == (first.traces, first.covered)
    more, _ = augmented(tmp_path, limit=40)  # the 20 done are skipped, the other 20 are added
    assert more.questions == 40 and more.new_variants == more.traces - first.traces


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


def dropped(opening: str) -> list[str]:
    """The gold teacher's reasons for giving a question no trace (none when it keeps one)."""
    result = GoldTeacher("kpdd-pot").sample(TRAIN[opening])
    return [] if result.traces else list(result.errors)


def changeable_texts(source_: augment.Source) -> list[str]:
    return [source_.builder.quantities[i].text for group in source_.changeable for i in group]


def test_a_number_read_where_a_result_may_be_meant_is_never_varied():
    """Mary's '$100 - $18 + $20': the 18 % and the $18 discount, the '$20 fine' and the $20 a week of trash bins
    ($10 * 2) are equal, so the program would rest on a guess; the question gets no gold trace and no variant."""
    from kpdd.run.augment import _sources

    opening = "Mary is paying her monthly garbage bill for a month with exactly four weeks"
    [reason] = dropped(opening)
    assert "ambiguous number" in reason and "is a result and a question quantity" in reason
    sources, [finished] = _sources(GoldTeacher("kpdd-pot"), [TRAIN[opening]])
    assert sources == [] and not finished.traces and "no gold trace: ambiguous number" in " ".join(finished.errors)


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
    """The 8 girls who joined the trip are the 8 boys again ('the number of girls and boys was the same'), a
    literal the rationale took from the old numbers: no variant could update it."""
    minibus = source("There were 18 students assigned in a minibus for a field trip")
    assert "students_boys + 8" in minibus.program and augment.unexplained_literal(minibus) == "8"
    assert augment.unchangeable(minibus) == "program keeps a literal the question does not explain"
    party = source("There were 60 women at the party, and three-fourths of these women were married and brought "
                   "their husbands with them to the party")
    assert "= 4 * " in party.program and augment.unexplained_literal(party) is None  # '3/4 of the men' explains 4
    for fixed in ("In 6 months Bella and Bob will be celebrating their 4th anniversary",  # 4 * 12, 2 * 12 months
                  "The ratio of boys to girls in a family is 5:7"):  # 5 / (5 + 7) of the children
        assert augment.unexplained_literal(source(fixed)) is None
    rhinos = source("One white rhino weighs 5100 pounds and one black rhino weighs 1 ton")
    assert "ton_pounds = 2000" in rhinos.program and augment.unexplained_literal(rhinos) == "2000"  # reads no number
    # A value the rationale solved for (Kati's 98 miles) is no source at all: the gold teacher drops the question.
    [reason] = dropped("Tracy, Michelle, and Kati take a road trip that is a total of 1000 miles")
    assert reason.endswith("program reads a number the question does not state (98)")


def test_a_number_in_two_roles_stays():
    """'2 small pizzas ... James ate 2/3 of all the slices': the 2 is also the fraction's numerator; 6 may change."""
    pizzas = source("James and Lisa ordered 2 small pizzas")
    assert "small_pizzas * slices" in pizzas.program
    assert "2" not in changeable_texts(pizzas) and "6" in changeable_texts(pizzas)


def test_a_number_written_twice_changes_as_one():
    """The program reads the 2 dogs; the 2 cats get the same new value, so whichever 2 it read, it reads the new one."""
    example = dspy.Example(id="pets", answer=6.0, question="Tom has 2 dogs in his small garden and 2 cats in his "
                           "house. Each dog eats 3 cans of food a day. How many cans do his dogs eat a day?",
                           rationale="His dogs eat 2 * 3 = <<2*3=6>>6 cans a day.").with_inputs("question")
    (trace,) = GoldTeacher("kpdd-pot").sample(example).traces
    pets = augment.source_of(example, trace["stages"])
    assert "dogs_in_small_garden * " in pets.program and "cats" not in pets.program
    assert changeable_texts(pets) == ["2", "2", "3"]
    for seed in range(5):
        twos = [c.new for c in augment.draw_changes(pets, random.Random(seed)) if c.old == "2"]
        assert len(twos) == 2 and twos[0] == twos[1]


def test_the_parts_and_total_of_a_stated_sum_stay():
    """'7 pets. 3 of them ..., 2 of them ... and the other 2': no new 7 or 3 keeps the sum; the 6 cans may change."""
    example = dspy.Example(id="pets", answer=18.0, question="Tom has 7 pets. 3 of them are dogs, 2 of them are cats "
                           "and the other 2 are fish. Each dog eats 6 cans of food a day. How many cans do his dogs "
                           "eat a day?", rationale="His 3 dogs eat 3 * 6 = <<3*6=18>>18 cans a day."
                           ).with_inputs("question")
    (trace,) = GoldTeacher("kpdd-pot").sample(example).traces
    pets = augment.source_of(example, trace["stages"])
    quantities = pets.builder.quantities
    in_the_sum = [q.text for k, q in enumerate(quantities) if augment._in_a_sum(k, quantities, example.question)]
    assert in_the_sum == ["7", "3", "2", "2"]
    assert changeable_texts(pets) == ["6"]


def test_a_count_that_is_no_longer_whole_is_rejected():
    """Nadia buys 20 roses and '3/4 times as many lilies': 22 roses make 16.5 lilies, 24 make 18."""
    nadia = source("Nadia was sent to the flower shop to buy 20 roses and 3/4 times as many Lillies as roses")
    change = next(c for c in augment.draw_changes(nadia, random.Random(0)) if c.old == "20")
    halves = augment.make_variant(nadia, [augment.Change(change.start, change.end, "20", "22", 22.0,
                                                         change.variable)])
    steps = augment.step_values(halves.program)
    assert steps["nadia_lilies"] == 16.5
    assert augment.variant_problem(nadia, halves, steps["ans"]) == "a count is not whole"
    whole = augment.make_variant(nadia, [augment.Change(change.start, change.end, "20", "24", 24.0,
                                                        change.variable)])
    assert augment.variant_problem(nadia, whole, augment.step_values(whole.program)["ans"]) is None


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
    assert augment.unchangeable(source("Carolyn practices the piano for 20 minutes a day and the violin for three "
                                       "times as long")) is None
    for clear in ("costs three times as much as", "is 3 times older than", "2 times more than"):
        assert not augment._AMBIGUOUS_COMPARATIVE.search(clear)


def test_a_source_reading_that_leaves_out_a_duration_or_a_group_size_is_not_varied():
    """Rachel drinks '3 glasses of water every day for the next 4 days' and the source's program reads the 4 glasses
    of Monday in place of the 4 days; Patty's 'brother and sister' each do 4 chores a week and the source's answer
    pays for 4: a variant would inherit either reading."""
    rachel = source("Rachel drinks 2 glasses of water on Sunday and 4 glasses of water on Monday")
    assert "glasses_water_per_day * glasses_water_on_monday" in rachel.program
    assert augment._unread_duration(rachel) == "4"
    assert augment.unchangeable(rachel).startswith("program leaves out a duration")
    patty = source("Patty decides that to convince her brother and sister to do her chores in exchange for cookies")
    assert augment.unchangeable(patty).startswith("question counts per member of a group")
    assert augment._unread_duration(source("Farmer Randy has 1700 acres of cotton he needs to have planted in 5 "
                                           "days")) is None  # 'working for 2 days' is read
    for counted in ("Jessie invited 4 friends over. How many will each person get?",
                    "There are 5 of them in total. If each member wants one pound"):
        assert augment._MEMBER.search(counted) and augment._COUNTED_PEOPLE.search(counted)


def test_a_count_beyond_its_unit_and_a_number_read_again_for_an_implied_count_are_caught():
    """'9 days a week' is no week; Joey's '2 hours per night' is read again for the 2 days of 'the weekends'."""
    peyton = source("Peyton has 3 children and they each get a juice box in their lunch, 5 days a week")
    fives = [augment.Change(q.start, q.end, q.text, "9", 9.0, peyton.builder.declared.get(k, ""))
             for k, q in enumerate(peyton.builder.quantities) if q.text == "5"]
    assert augment.check_variant(peyton, augment.make_variant(peyton, fives)) == \
        "a count exceeds the unit it is per ('9 days a week')"
    sixes = [augment.Change(c.start, c.end, c.old, "6", 6.0, c.variable) for c in fives]
    assert augment.check_variant(peyton, augment.make_variant(peyton, sixes)) is None
    joey = source("Joey studies for his SAT exams 2 hours per night 5 nights a week")
    assert "hours_per_day * hours_per_night" in joey.program
    assert "2" not in changeable_texts(joey) and "5" in changeable_texts(joey)


def test_fifty_percent_and_the_parts_of_a_two_part_sum_stay():
    """A jacket at '50%' off: the discount is also what is paid, so a new value would show which one the program
    computes. Randy: 'in 5 days ... for 2 days and then ... for another 3 days' is a stated sum."""
    example = dspy.Example(id="jacket", answer=20.0, question="A store sells a $40 jacket at 50% off. How much does "
                           "the jacket cost now?", rationale="The discount is 40*50% = $<<40*50*.01=20>>20\nThe "
                           "jacket costs 40-20 = $<<40-20=20>>20").with_inputs("question")
    (trace,) = GoldTeacher("kpdd-pot").sample(example).traces
    jacket = augment.source_of(example, trace["stages"])
    assert "50%" not in changeable_texts(jacket) and "$40" in changeable_texts(jacket)
    randy = source("Farmer Randy has 1700 acres of cotton he needs to have planted in 5 days")
    assert not {"5", "2", "3"} & set(changeable_texts(randy)) and "1700" in changeable_texts(randy)


def test_two_different_numbers_made_equal_are_rejected():
    """Kate's fee of $5 'increased to $7': a variant drawing $8 for both says the price increased to what it was."""
    kate = source("Kate loves painting")
    fee, increased = (next(c for c in augment.draw_changes(kate, random.Random(0)) if c.old == old)
                      for old in ("$5", "$7"))
    same = augment.make_variant(kate, [augment.Change(c.start, c.end, c.old, "$8", 8.0, c.variable)
                                       for c in (fee, increased)])
    assert augment.check_variant(kate, same) == "two different numbers made equal"
    apart = augment.make_variant(kate, [augment.Change(fee.start, fee.end, "$5", "$6", 6.0, fee.variable),
                                        augment.Change(increased.start, increased.end, "$7", "$9", 9.0,
                                                       increased.variable)])
    assert augment.check_variant(kate, apart) is None
