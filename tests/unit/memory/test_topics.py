"""Incremental topic clustering and tf-idf keyword labels."""

from __future__ import annotations

import math

import pytest

from domain.errors import InvalidRequest
from domain.memory.topics import TopicModel, keyword_labels, tokenize


def test_vectors_join_the_nearest_topic_above_the_threshold_else_open_a_new_one() -> None:
    model = TopicModel(threshold=0.8)
    model, a = model.assign("m1", (1.0, 0.0), "T1")
    model, b = model.assign("m2", (10.0, 1.0), "T2")  # cos ~0.995 with T1
    model, c = model.assign("m3", (0.0, 1.0), "T3")  # orthogonal
    model, d = model.assign("m4", (0.1, 1.0), "T4")
    assert (a.topic_id, a.created) == ("T1", True)
    assert (b.topic_id, b.created) == ("T1", False) and b.similarity > 0.99
    assert (c.topic_id, c.created) == ("T3", True)
    assert (d.topic_id, d.created) == ("T3", False)
    assert [t.id for t in model.topics] == ["T1", "T3"]
    t1 = model.topics[0]
    assert t1.size == 2 and t1.member_ids == ("m1", "m2")


def test_centroid_is_the_running_mean_of_unit_vectors() -> None:
    model = TopicModel(threshold=0.0)
    for i, v in enumerate([(2.0, 0.0), (0.0, 3.0), (1.0, 1.0)]):
        model, _ = model.assign(f"m{i}", v, "T")
    s = 1 / math.sqrt(2)
    expected = ((1 + 0 + s) / 3, (0 + 1 + s) / 3)
    assert model.topics[0].centroid == pytest.approx(expected)
    assert model.topics[0].size == 3


def test_assign_validates_vectors_and_ids() -> None:
    model, _ = TopicModel(0.5).assign("m1", (1.0, 0.0), "T")
    with pytest.raises(InvalidRequest):
        model.assign("m2", (0.0, 0.0), "U")
    with pytest.raises(InvalidRequest, match="already exists"):
        model.assign("m2", (-1.0, 0.0), "T")


def test_tokenizer_drops_stopwords_and_punctuation() -> None:
    assert tokenize("The cat's on THE mat, isn't it? 42!") == ["cat", "mat", "isn", "42"]


def test_keyword_labels_prefer_terms_distinctive_to_the_topic() -> None:
    labels = keyword_labels(
        {
            "hiking": ["We went hiking in the mountains", "Mountains trail hiking boots", "the weather was nice"],
            "cooking": ["I love cooking pasta", "pasta recipe with garlic", "the weather was nice"],
        },
        k=2,
    )
    assert labels["hiking"] == ("hiking", "mountains")
    assert labels["cooking"] == ("pasta", "cooking")
    assert "weather" not in labels["hiking"]
