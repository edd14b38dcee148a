"""The loaders against every shipped dataset, plus users' files and malformed rows."""

import json

import dspy
import pytest

from kpdd.data import DATASETS, asdiv_answer, load_dataset, load_file, load_records, read_split
from kpdd.errors import DataError, RegistryError

EXPECTED_ROWS = {  # (dataset, split): rows kept; ASDiv keeps the rows whose answer is one number
    ("gsm8k", "train"): 7473,
    ("gsm8k", "test"): 1319,
    ("gsm8k", "test_socratic"): 1319,
    ("svamp", "test"): 1000,
    ("asdiv", "test"): 2168,
    ("multiarith", "test"): 600,
}


@pytest.mark.parametrize("name,split", list(EXPECTED_ROWS))
def test_read_split_round_trip_every_shipped_dataset(name, split):
    loaded = read_split(name, split)
    assert len(loaded.records) == EXPECTED_ROWS[name, split]
    assert len({r.id for r in loaded.records}) == len(loaded.records)  # ids are unique
    for record in loaded.records:
        assert record.question and record.dataset == name and record.split == split
        assert isinstance(record.answer, float)


def test_asdiv_skips_are_counted_by_reason():
    loaded = read_split("asdiv")
    assert loaded.skipped_total == 2305 - 2168
    assert set(loaded.skipped) == {"ratio", "clock time", "multiple numbers", "not a number"}


@pytest.mark.parametrize("text,expected", [
    ("9 (apples)", (9.0, None)), ("5/2", (2.5, None)), ("-(1/3)", (-1 / 3, None)), ("0.5 (kg)", (0.5, None)),
    ("3:2", (None, "ratio")), ("5:45", (None, "clock time")), ("3:30 p.m.", (None, "clock time")),
    ("11; 12; 13", (None, "multiple numbers")), ("Yes", (None, "not a number")),
])
def test_asdiv_answer_parses_numbers_and_names_the_rest(text, expected):
    value, reason = asdiv_answer(text)
    assert reason == expected[1]
    assert value == pytest.approx(expected[0]) if expected[0] is not None else value is None


def test_gsm8k_record_keeps_rationale_and_socratic_sub_questions():
    plain = read_split("gsm8k", "test").records[0]
    socratic = read_split("gsm8k", "test_socratic").records[0]
    assert plain.answer == 18.0 and "<<16-3-4=9>>" in plain.rationale and "####" not in plain.rationale
    assert socratic.sub_questions[0] == "How many eggs does Janet sell?"
    assert socratic.rationale.split("\n")[0].startswith("Janet sells 16 - 3 - 4")


def test_load_dataset_returns_examples_with_question_input():
    examples = load_dataset("svamp", limit=5, seed=1)
    assert len(examples) == 5 and all(isinstance(e, dspy.Example) for e in examples)
    assert set(examples[0].inputs().keys()) == {"question"}
    assert examples[0].labels().answer == examples[0].answer


def test_seeded_sampling_is_stable_and_seed_dependent():
    first = [r.id for r in load_records("multiarith", limit=10, seed=3)]
    assert first == [r.id for r in load_records("multiarith", limit=10, seed=3)]
    assert first != [r.id for r in load_records("multiarith", limit=10, seed=4)]


def test_data_dir_override_by_environment(tmp_path, monkeypatch):
    (tmp_path / "multiarith").mkdir()
    rows = [{"iIndex": 7, "sQuestion": " 2 and 3? ", "lEquations": ["X=2+3"], "lSolutions": [5.0]}]
    (tmp_path / "multiarith" / "MultiArith.json").write_text(json.dumps(rows))
    monkeypatch.setenv("KPDD_DATA_DIR", str(tmp_path))
    (record,) = load_records("multiarith")
    assert (record.id, record.question, record.answer, record.equation) == ("multiarith-7", "2 and 3?", 5.0, "X=2+3")


def test_user_jsonl_file_with_named_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "1+1?", "a": "1+1=2\\n#### 2", "key": "x1"}\n\n{"q": "2*3?", "a": 6, "key": "x2"}\n')
    loaded = load_file(path, question_field="q", answer_field="a", id_field="key")
    assert [(r.id, r.answer, r.rationale) for r in loaded.records] == [("x1", 2.0, "1+1=2"), ("x2", 6.0, None)]


def test_user_file_by_path_through_load_dataset(tmp_path):
    path = tmp_path / "probs.json"
    path.write_text(json.dumps([{"question": "How many?", "answer": "1,200"}]))
    (example,) = load_dataset(str(path))
    assert example.answer == 1200.0 and example.dataset == "probs"


@pytest.mark.parametrize("content,message", [
    ('{"question": "q"}\n', r"line 1: missing field 'answer'"),
    ('{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "ten"}\n', r"line 2: field 'answer': expected a number"),
    ('{"question": "q", "answer": 1}\n{oops\n', r"line 2: not valid JSON"),
])
def test_malformed_user_row_names_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        load_file(path)
    assert str(path) in str(err.value)


def test_malformed_gsm8k_row_names_the_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "a\\n#### 3"}\n{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=r"test.jsonl line 2: field 'answer': expected a rationale ending in '#### <number>'"):
        read_split("gsm8k", "test", data_dir=tmp_path)


def test_unknown_dataset_and_split_suggest_close_names():
    with pytest.raises(RegistryError, match="Did you mean 'gsm8k'"):
        load_records("gsm8")
    with pytest.raises(RegistryError, match="Did you mean 'test'"):
        read_split("svamp", "tset")


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_split("svamp", data_dir=tmp_path / "nowhere")
    assert set(DATASETS) == {"gsm8k", "svamp", "asdiv", "multiarith"}
