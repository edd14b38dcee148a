"""Gold programs that mean what the question says: no number bound by coincidence, fractions and multipliers as
quantities of their own, key points that state every literal the solution reads (GSM8K train questions whose
earlier programs reached the gold answer only because two values were equal, then one made-up question per class
of coincidental binding)."""

import dspy
import pytest

from kpdd.compile.gold import GoldTeacher
from kpdd.compile.gold.checks import is_stated, rationale_literals, trace_unstated
from kpdd.compile.gold.language import split_facts
from kpdd.compile.gold.programs import question_quantities, rationale_builder
from kpdd.data import load_dataset

TRAIN = {e.id: e for e in load_dataset("gsm8k", "train")}


def traced(number: str, method: str = "kpdd-pot"):
    example = TRAIN[f"gsm8k-train-{number}"]
    return example, GoldTeacher(method).sample(example)


def program_of(result) -> str:
    return result.traces[0]["stages"][-1]["outputs"]["program"]


@pytest.mark.parametrize("number", ["00776", "04930", "00331", "03155", "03445", "07452", "05897", "07390"])
def test_a_question_whose_numbers_the_rationale_cannot_place_is_dropped(number):
    """'one-third' vs '3 people', 20 % of 20 trees, 'five times' vs 5 miles left, 1/4 vs 'One of', Olaf's two 10s,
    '-18 / -2' solved for: no program, one countable reason."""
    _, result = traced(number)
    assert not result.traces and len(result.errors) == 1
    assert any(("ambiguous number" in reason) or ("does not state" in reason) for reason in result.errors)


@pytest.mark.parametrize("number", ["00004", "00056", "00396"])
def test_a_multiplier_left_unread_beside_an_equal_number_read_drops_the_question(number):
    """'2 different friends twice a week', 'twice as long' and '2 hours', '2 insulin pills' and 'twice as many':
    a '* 2' that reads the 2 and never 'twice' may have meant either; KPDD-CoT, which binds nothing, keeps them."""
    _, result = traced(number)
    assert not result.traces and [*result.errors] == ["kpdd-pot: ambiguous number: 2 is 'twice' and '2'"]
    assert traced(number, "kpdd-cot")[1].traces


def test_a_result_equal_to_a_unit_size_the_line_names_is_not_read_as_that_unit():
    """'240/60 = 4 hours' after '6 x 10 = 60 minutes': an hour's 60 minutes or the six dogs' 60 minutes. (A result
    just computed is that result: 00004's '12 pages every week … 12*52' is dropped for its 'twice' alone, above.)"""
    _, result = traced("02318")
    assert not result.traces and [*result.errors] == [
        "kpdd-pot: ambiguous number: 60 is a result read again and the size of a unit the line names"]


def test_two_dozen_reads_the_two_of_two_dozen_not_the_two_bandages():
    _, result = traced("02308")
    program = program_of(result)
    assert "two_dozen = bandages_before_peggy_skinned * less" in program  # 12 * the '2' of 'two dozen'
    assert "bandages_on_left_knee + bandages_on_right_knee" in program


def test_three_times_as_much_is_a_multiplier_and_a_key_point():
    example, result = traced("02540")
    program, key_points = program_of(result), result.traces[0]["stages"][1]["outputs"]["key_points"]
    assert "years_ago" not in program and "times = 3" in program
    assert "The same art piece will be three times as much in another three years." in key_points


def test_an_average_divides_by_the_count_of_trees_not_a_ratio_equal_to_it():
    """16 / 4 branches per foot: the 4 is the number of trees, not the first tree's ratio of 4."""
    _, result = traced("03921")
    assert not result.traces or "/ branches_per_foot" not in program_of(result)


@pytest.mark.parametrize("number,method", [("02540", "kpdd-cot"), ("06798", "kpdd-cot"), ("07363", "kpdd-cot"),
                                           ("02540", "kpdd-pot"), ("02308", "kpdd-pot")])
def test_key_points_state_every_literal_the_solution_reads(number, method):
    example, result = traced(number, method)
    assert trace_unstated(result.traces[0]["stages"], example.rationale) == []


def test_variants_come_only_from_faithful_sources(tmp_path):
    """A question dropped for an ambiguous number has no gold trace, so kpdd augment never varies it."""
    from kpdd.run.augment import _sources

    examples = [TRAIN["gsm8k-train-05897"], TRAIN["gsm8k-train-03921"], TRAIN["gsm8k-train-00776"]]
    sources, finished = _sources(GoldTeacher("kpdd-pot"), examples)
    assert "gsm8k-train-05897" not in {s.example.id for s in sources}
    assert "gsm8k-train-00776" not in {s.example.id for s in sources}


# One made-up question per class of coincidental binding (none is a GSM8K question) -------------------------------

def made_up(question: str, rationale: str, answer: float):
    return dspy.Example(id="made-up", question=question, rationale=rationale, answer=answer).with_inputs("question")


def read_at(example, text: str) -> str:
    """The kind of the quantity the gold program reads at ``text`` in the question, or '' when it reads none."""
    builder, _ = rationale_builder(example.question, example.rationale, example.answer)
    start = example.question.index(text)
    return next((builder.quantities[k].kind for k in builder.declared if builder.quantities[k].start == start), "")


def test_a_number_worded_like_one_of_two_equal_quantities_reads_that_one():
    """'6 more' is the question's '6 more', not its '6 comic books left' (which shares more words with the line)."""
    leo = made_up("On Monday, Leo read 4 comic books. On Tuesday, Leo had 6 comic books left on his shelf, and his "
                  "sister lent him 6 more. How many comic books did Leo get to read?",
                  "Leo read 4 comic books on Monday + 6 more his sister lent him = <<4+6=10>>10 comic books.", 10.0)
    assert read_at(leo, "6 more") == "number" and read_at(leo, "6 comic books left") == ""


def test_a_number_the_rationale_words_as_another_thing_drops_the_question():
    """'4 corners' reads the only 4 of the question, '4 rows of tulips': equal by coincidence."""
    beds = made_up("A gardener plants 4 rows of tulips next to 3 square flower beds. How many corners do the flower "
                   "beds have in all?", "The 3 square beds have 4 corners each, for 3*4 = <<3*4=12>>12 corners.", 12.0)
    result = GoldTeacher("kpdd-pot").sample(beds)
    assert not result.traces and "'4 corners' in the rationale" in next(iter(result.errors))


def test_a_two_that_counts_a_pair_the_line_names_drops_the_question():
    """'The pen and ruler cost 2*4': the 2 counts the pen and the ruler, not the '2 notebooks'."""
    nora = made_up("Nora buys 2 notebooks for $3 each, and a pen and a ruler for $4 each. How much does she spend?",
                   "The notebooks cost 2*3 = $<<2*3=6>>6.\nThe pen and ruler cost 2*4 = $<<2*4=8>>8.\n"
                   "She spends 6+8 = $<<6+8=14>>14.", 14.0)
    result = GoldTeacher("kpdd-pot").sample(nora)
    assert not result.traces and "read for 'pen and ruler'" in next(iter(result.errors))


def test_a_step_the_answer_never_reads_drops_the_question():
    """23 - 10 finds which jar was emptied; the sum of the other two is picked in prose, not computed from it."""
    jars = made_up("Sam has 4 jars holding 11, 13, 12 and 10 coins. He empties the smallest jar and one other jar into "
                   "a box, which now holds 23 coins. He pours the other two jars into a bag. How many coins are in "
                   "the bag?", "The other jar held 23 - 10 = <<23-10=13>>13 coins.\nSo the bag holds the 11 and 12 "
                   "coin jars: 11 + 12 = <<11+12=23>>23 coins.", 23.0)
    result = GoldTeacher("kpdd-pot").sample(jars)
    assert not result.traces and next(iter(result.errors)).startswith("kpdd-pot: a step the answer never reads")


def test_a_ratio_part_is_read_as_the_part_not_as_an_equal_count():
    """'2 cousins' and the ratio's 2: in a rationale about parts, Ann's 2 parts are the ratio's."""
    prize = made_up("A prize is shared between 2 cousins, Ann and Ben, in the ratio 2:3. If Ben gets $300, how much "
                    "does Ann get?", "Each part is $300/3 = $<<300/3=100>>100\nAnn gets 2*$100 = $<<2*100=200>>200",
                    200.0)
    assert read_at(prize, "2:3") == "ratio" and read_at(prize, "2 cousins") == ""
    assert "ratio_part_1 * " in program_of(GoldTeacher("kpdd-pot").sample(prize))


def test_a_ratio_at_the_end_of_a_sentence_or_of_three_parts_is_a_ratio():
    assert [q.value for q in question_quantities("They share it in the ratio 5:7. How much?")] == [5, 7]
    assert [(q.value, q.kind) for q in question_quantities("in the ratio 4:3:7, respectively")] == \
        [(4, "ratio"), (3, "ratio"), (7, "ratio")]
    assert question_quantities("The bus left at 6:30 pm in a ratio race.") == []  # a time, no ratio
    stickers = made_up("Tom and Una share 48 stickers in the ratio 5:7. How many stickers does Una get?",
                       "The ratio has 5+7 = <<5+7=12>>12 parts\nUna gets 7/12*48 = <<7/12*48=28>>28 stickers", 28.0)
    trace = GoldTeacher("kpdd-pot").sample(stickers).traces[0]
    assert "ratio_part_1 + ratio_part_2" in trace["stages"][-1]["outputs"]["program"]
    assert trace_unstated(trace["stages"], stickers.rationale) == []


def test_a_unit_is_named_only_by_a_whole_word():
    """'Daytona' names no day, so a 7 it would explain as 'days in a week' is unstated."""
    assert not is_stated(7, "Daytona Beach has 26 shark sightings.") and is_stated(7, "She swims three days.")
    assert is_stated(60, "He is paid hourly.") and is_stated(100, "What percentage is left?")
    shark = made_up("Daytona Beach has 26 sightings. It has 5 more than triple the sightings of Cape May. How many "
                    "sightings does Cape May have?", "Let x be Cape May's sightings\n26=5+3x\nx=<<7=7>>7", 7.0)
    result = GoldTeacher("kpdd-pot").sample(shark)
    assert not result.traces and "does not state (7)" in next(iter(result.errors))


def test_an_ordinal_or_a_glued_unit_read_as_a_number_is_a_quantity_the_key_points_state():
    """'her 30th birthday' is Maya's age: a named variable, and its clause a key point (KPDD-PoT and KPDD-CoT)."""
    maya = made_up("Maya's parents moved to Oslo in 1990. The year is 2024 and Maya just had her 30th birthday. How "
                   "many years had her parents lived in Oslo when Maya was born?",
                   "Maya was born in 2024 - 30 = <<2024-30=1994>>1994.\nHer parents had lived in Oslo for "
                   "1994 - 1990 = <<1994-1990=4>>4 years.", 4.0)
    assert "birthday = 30" in program_of(GoldTeacher("kpdd-pot").sample(maya))
    for method in ("kpdd-pot", "kpdd-cot"):
        trace = GoldTeacher(method).sample(maya).traces[0]
        assert "Maya just had her 30th birthday." in trace["stages"][1]["outputs"]["key_points"]
        assert trace_unstated(trace["stages"], maya.rationale) == []


def test_kpdd_cot_key_points_state_literals_written_glued_to_a_unit():
    """The rationale reads the 22 of '22kg'; a result it only restates ('<<4=4>>') is no literal."""
    flour = made_up("Jim bought a 22kg sack of flour. He bakes 36 loaves. Each loaf needs 0.5kg of flour. How many "
                    "kilograms are left?", "The loaves need 36*0.5 = <<36*0.5=18>>18 kg\nSo 22-18 = <<4=4>>4 kg are "
                    "left", 4.0)
    trace = GoldTeacher("kpdd-cot").sample(flour).traces[0]
    assert "Jim bought a 22kg sack of flour." in trace["stages"][1]["outputs"]["key_points"]
    assert rationale_literals(flour.rationale, flour.question) == ["36", "0.5"]
    assert trace_unstated(trace["stages"], flour.rationale) == []


def test_an_hours_minutes_are_a_literal_not_an_equal_sum_of_money():
    """'2 x 60' in a line about minutes is an hour's 60 minutes, not the '$60 per article' the line never speaks of."""
    ella = made_up("Ella earns $60 per article. She writes for 2 hours and types 10 words a minute. How many words "
                   "does she write?", "She writes for 2 x 60 = <<2*60=120>>120 minutes\nShe writes 120 x 10 = "
                   "<<120*10=1200>>1200 words", 1200.0)
    program = program_of(GoldTeacher("kpdd-pot").sample(ella))
    assert "* 60" in program and "article" not in program


def test_a_decimal_without_its_leading_zero_is_a_quantity():
    eggs = made_up("Tim buys 36 eggs. Eggs cost $.50 each. How much does he pay?", "36*.5=$<<36*.5=18>>18", 18.0)
    assert [(q.value, q.money) for q in question_quantities(eggs.question)] == [(36, False), (0.5, True)]
    assert "= 0.5" in program_of(GoldTeacher("kpdd-pot").sample(eggs))


def test_a_fact_split_off_keeps_its_own_subject_and_names_stay_together():
    """'... and his aunt went to the shop and bought him 3 more': the aunt bought them, not Tom; 'Lea and Max' are
    one list, not two facts."""
    assert split_facts("On Friday, Tom had 3 pens left after losing some, and his aunt went to the shop and bought "
                       "him 3 more.")[-1] == "His aunt bought him 3 more."
    assert split_facts("The prize is shared among 2 partners, Lea and Max in the ratio 2:3 respectively.") == \
        ["The prize is shared among 2 partners, Lea and Max in the ratio 2:3 respectively."]


def test_kpdd_cot_drops_a_rationale_reading_a_count_the_question_never_writes():
    """'Ali and Leila' are 2 only to a reader: no key point can state the 2 the rationale multiplies by."""
    pair = made_up("Ali and Leila each buy 3 apples. How many apples do they buy?",
                   "They buy 2*3 = <<2*3=6>>6 apples.", 6.0)
    dropped = GoldTeacher("kpdd-cot").sample(pair)
    assert not dropped.traces
    assert list(dropped.errors) == ["kpdd-cot: solution reads a number the question does not state (2)"]
    assert GoldTeacher("cot").sample(pair).traces  # plain CoT has no key points to state it
