"""Gold programs that mean what the question says: no number bound by coincidence, fractions and multipliers as
quantities of their own, key points that state every literal the solution reads (GSM8K train questions whose
earlier programs reached the gold answer only because two values were equal)."""

import pytest

from kpdd.compile.gold import GoldTeacher
from kpdd.compile.gold.checks import trace_unstated
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
