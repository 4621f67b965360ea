"""The gateway's postprocess step on the outputs a model server can return."""

from __future__ import annotations

import numpy as np
import pytest

from api.classification import postprocess
from api.errors import ApiError
from fdl import contract


def test_top_k_labels_and_scores() -> None:
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)
    classes = np.array([[b"cat", b"dog", b"fox"]])
    [prediction] = postprocess({contract.SCORES_KEY: scores, contract.CLASSES_KEY: classes}, 2, 1)
    assert prediction["label"] == "dog" and prediction["class_id"] == 1
    assert [entry["label"] for entry in prediction["top_k"]] == ["dog", "fox"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_a_clear_502_not_a_500(bad: float) -> None:
    """A version exported from diverged weights answers NaN: JSON cannot carry it, so the
    response encoder would fail with a 500 unless the gateway says what is wrong."""
    scores = np.array([[0.5, 0.5], [bad, 0.5]], np.float32)
    with pytest.raises(ApiError) as raised:
        postprocess({contract.SCORES_KEY: scores}, 1, 2)
    assert raised.value.status == 502
    assert raised.value.code == "bad_model_output" and "NaN or infinite" in raised.value.message


@pytest.mark.parametrize(
    ("shape", "rows"),
    [((1, 0), 1), ((2, 3), 1), ((1, 3), 2), ((0, 3), 1)],
    ids=["no classes", "more rows than images", "fewer rows than images", "no rows"],
)
def test_scores_not_one_row_per_image_are_a_502(shape: tuple[int, int], rows: int) -> None:
    """A model with no classes failed with a 500 (IndexError); one answering another number of
    rows than it was sent images gave each caller rows that were not theirs, or too few."""
    scores = np.full(shape, 0.5, np.float32)
    with pytest.raises(ApiError) as raised:
        postprocess({contract.SCORES_KEY: scores}, 3, rows)
    assert raised.value.status == 502 and raised.value.code == "bad_model_output"
    assert f"[{rows}, K>0]" in raised.value.message
