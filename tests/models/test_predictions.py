"""Predictions files: aligned to the store by id, one rule for logits and probabilities, and a
one-line error for every malformed file."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import audit.models.outputs
from audit.errors import InputError
from audit.models import ModelDecisions, interpret_scores, load_predictions

STORE_IDS = [f"{i:06d}.jpg" for i in range(1, 9)]


def _write(tmp_path: Path, frame: pd.DataFrame | str, name: str = "pred.csv") -> Path:
    p = tmp_path / name
    if isinstance(frame, str):
        p.write_text(frame, encoding="utf-8")
    else:
        frame.to_csv(p, index=False)
    return p


def test_doctests():
    assert doctest.testmod(audit.models.outputs).failed == 0


def test_logits_probabilities_and_labels_give_the_same_decisions(tmp_path):
    logits = np.array([-2.0, 0.5, 3.0, -0.1, 1.2, -4.0, 0.01, -0.7])
    expected = (logits > 0).astype(np.int8)
    order = [3, 0, 7, 5, 1, 6, 2, 4]  # rows in any order
    ids = [STORE_IDS[i] for i in order]
    read = {}
    for kind, values in (
        ("logit", logits),
        ("probability", 1 / (1 + np.exp(-logits))),
        ("label", expected),
    ):
        column = "label" if kind == "label" else "score"
        frame = pd.DataFrame({"id": ids, column: values[order]})
        read[kind] = load_predictions(_write(tmp_path, frame, f"{kind}.csv"), STORE_IDS)
        assert read[kind].score_kind == kind
        np.testing.assert_array_equal(read[kind].rows, np.arange(8))
        np.testing.assert_array_equal(read[kind].decisions, expected)
    np.testing.assert_allclose(read["logit"].margins, logits)
    np.testing.assert_allclose(read["probability"].margins, logits, atol=1e-9)
    assert read["label"].margins is None


def test_a_subset_of_the_store_and_ids_parsed_like_metadata(tmp_path):
    """Numeric ids: the store's metadata.csv and the predictions file are parsed the same way,
    so ``7`` matches ``7`` (and ``007`` too, as pandas reads both as the number 7)."""
    store_ids = pd.read_csv(_write(tmp_path, "id\n3\n5\n7\n11\n", "metadata.csv"))["id"]
    p = _write(tmp_path, "id,score\n007,0.9\n3,0.2\n")
    result = load_predictions(p, store_ids.tolist())
    np.testing.assert_array_equal(result.rows, [0, 2])
    np.testing.assert_array_equal(result.decisions, [0, 1])
    np.testing.assert_array_equal(result.take([2, 0]), [1, 0])
    with pytest.raises(
        InputError, match="no decision for 1 of the 3 rows needed \\(first: id '5'\\)"
    ):
        result.take([0, 1, 2], ids=[str(i) for i in store_ids])


def test_whole_number_ids_written_as_floats_match_integer_ids(tmp_path):
    """pandas writes an integer column with one empty cell as floats (``7.0``): such ids are the
    integers they hold, on either side; an id with a fraction is still no row of the store."""
    p = _write(tmp_path, "id,score\n7.0,0.9\n3.0,0.2\n")
    result = load_predictions(p, [3, 5, 7, 11])
    np.testing.assert_array_equal(result.rows, [0, 2])
    np.testing.assert_array_equal(result.decisions, [0, 1])
    floats = pd.read_csv(_write(tmp_path, "id,x\n3,1\n,1\n7,1\n", "metadata.csv"))["id"]
    assert floats.dtype == np.float64  # the store's own ids read as floats
    result = load_predictions(_write(tmp_path, "id,score\n7,0.9\n3,0.2\n"), floats.tolist())
    np.testing.assert_array_equal(result.rows, [0, 2])
    with pytest.raises(
        InputError, match=r"1 ids are not rows of the store \(first: '7\.5' on line 2\)"
    ):
        load_predictions(_write(tmp_path, "id,score\n7.5,0.9\n3.0,0.2\n"), [3, 5, 7, 11])


def test_ids_in_messages_are_plain_text():
    d = ModelDecisions(np.array([0, 2]), np.array([1, 0], np.int8), None, "label")
    with pytest.raises(InputError) as exc:
        d.take([0, 1], ids=np.array([3, 5, 7]))  # NumPy integers, as a metadata column gives
    assert "(first: id '5')" in str(exc.value), str(exc.value)
    with pytest.raises(InputError) as exc:  # a float column (one empty cell): as ids compare
        d.take([0, 1], ids=np.array([3.0, 5.0, 7.0]))
    assert "(first: id '5')" in str(exc.value), str(exc.value)


def test_score_and_label_together_must_agree(tmp_path):
    frame = pd.DataFrame(
        {"id": STORE_IDS[:4], "score": [0.2, 0.8, 0.6, 0.1], "label": [0, 1, 1, 0]}
    )
    result = load_predictions(_write(tmp_path, frame), STORE_IDS)
    assert result.score_kind == "probability"
    frame.loc[2, "label"] = 0
    with pytest.raises(InputError, match=r"'label' disagrees with 'score' on 1 rows .*000003\.jpg"):
        load_predictions(_write(tmp_path, frame), STORE_IDS)


def _sigmoid_text(s: float) -> str:
    return repr(float(1 / (1 + np.exp(-s))))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-30, max_value=30).filter(lambda v: abs(v) > 1e-6),
        min_size=2,
        max_size=8,
    ).filter(lambda v: min(v) < 0 < max(v))
)
def test_rule_reads_a_logit_and_its_probability_alike(logits):
    """Any logits with both signs, and the same model's probabilities, decide alike."""
    s = np.array(logits)
    d_logit, _, kind_logit = interpret_scores(s, "x")
    p = np.array([float(_sigmoid_text(v)) for v in s])
    d_prob, _, kind_prob = interpret_scores(p, "x")
    np.testing.assert_array_equal(d_logit, (s > 0).astype(np.int8))
    np.testing.assert_array_equal(d_prob, d_logit)
    assert kind_prob == "probability"
    assert kind_logit == "logit"


def test_take_finds_rows_in_any_order():
    d = ModelDecisions(np.array([9, 2, 5]), np.array([1, 0, 1], np.int8), None, "label")
    np.testing.assert_array_equal(d.take([5, 9, 2, 5]), [1, 1, 0, 1])
    with pytest.raises(InputError, match="first: row 3"):
        d.take([3, 100])


# -- bad files: one line each ----------------------------------------------------------------

BAD = [
    ("no id column", "row,score\n000001.jpg,0.5\n", "needs an 'id' column"),
    ("no score or label", "id,prob\n000001.jpg,0.5\n", "needs a 'score' or a 'label' column"),
    ("empty", "id,score\n", "no predictions"),
    (
        "duplicate ids",
        "id,score\n000001.jpg,0.9\n000002.jpg,0.1\n000001.jpg,0.3\n",
        "id '000001.jpg' appears more than once (lines 2, 4)",
    ),
    (
        "unknown ids",
        "id,score\n000001.jpg,0.9\nghost.jpg,0.1\n000002.jpg,0.2\n",
        "1 ids are not rows of the store (first: 'ghost.jpg' on line 3)",
    ),
    ("missing id", "id,score\n000001.jpg,0.9\n,0.1\n", "line 3 has no id"),
    ("NaN score", "id,score\n000001.jpg,0.9\n000002.jpg,nan\n", "(first: nan for id '000002.jpg')"),
    ("inf score", "id,score\n000001.jpg,0.9\n000002.jpg,inf\n", "(first: inf for id '000002.jpg')"),
    ("text score", "id,score\n000001.jpg,0.9\n000002.jpg,high\n", "'high' for id '000002.jpg'"),
    (
        "percentages",
        "id,score\n000001.jpg,97\n000002.jpg,12\n000003.jpg,55\n",
        "neither probabilities nor logits: 3 of 3 lie outside [0, 1]",
    ),
    (
        "log-probabilities",
        "id,score\n000001.jpg,-0.1\n000002.jpg,-2.3\n",
        "all are ≤ 0 (so as logits every row would get the same decision)",
    ),
    (
        "label 2",
        "id,label\n000001.jpg,1\n000002.jpg,2\n",
        "labels must be 0 or 1; 1 are not (first: 2 for id '000002.jpg')",
    ),
    ("label 0.5", "id,label\n000001.jpg,1\n000002.jpg,0.5\n", "(first: 0.5 for id '000002.jpg')"),
    ("label text", "id,label\n000001.jpg,yes\n000002.jpg,0\n", "'yes' for id '000001.jpg'"),
    (
        "constant labels",
        "id,label\n000001.jpg,1\n000002.jpg,1\n",
        "decisions are constant (class 1 for all 2 rows)",
    ),
    (
        "constant probabilities",
        "id,score\n000001.jpg,0.2\n000002.jpg,0.4\n",
        "decisions are constant (class 0",
    ),
    ("not UTF-8", b"id,score\n\xff\xfe,0.5\n", "not UTF-8"),
]


@pytest.mark.parametrize(("what", "content", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_predictions_files(tmp_path, what, content, words):
    p = tmp_path / "pred.csv"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        load_predictions(p, STORE_IDS)
    text = str(exc.value)
    assert words in text, text
    assert "\n" not in text


def test_missing_file_and_ambiguous_store_ids(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_predictions(tmp_path / "nope.csv", STORE_IDS)
    p = _write(tmp_path, "id,score\n000001.jpg,0.9\n000002.jpg,0.1\n")
    with pytest.raises(InputError, match="store's ids are not unique"):
        load_predictions(p, [*STORE_IDS, STORE_IDS[0]])
