"""Topics: incremental clustering of embeddings and keyword labels.

``TopicModel.assign`` puts one unit vector into the topic whose centroid is nearest by cosine when
that similarity reaches ``threshold``, else opens a new topic (its id is passed in). Centroids are
running means of the member unit vectors. ``keyword_labels`` names each topic by its top terms,
scored by tf-idf where each topic's texts form one document.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec

from domain.errors import InvalidRequest
from domain.memory.vectors import validate_vector

__all__ = [
    "STOPWORDS",
    "Assignment",
    "Topic",
    "TopicModel",
    "keyword_labels",
    "tokenize",
    "unit",
]

STOPWORDS: frozenset[str] = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "let", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "really", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "us", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "yeah", "yes", "you", "your", "yours", "yourself", "yourselves", "ok", "okay", "oh", "im", "ive", "id", "dont", "thats", "its", "get", "got", "like", "one", "also", "well"]
)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Lower-case alphanumeric words (apostrophe suffixes dropped), stopwords and 1-letter words
    removed unless ``keep_stopwords``."""
    words = [w.split("'")[0] for w in _WORD.findall(text.casefold())]
    if keep_stopwords:
        return [w for w in words if w]
    return [w for w in words if len(w) > 1 and w not in STOPWORDS]


def unit(vector: Sequence[float]) -> tuple[float, ...]:
    v = validate_vector(vector)
    norm = math.sqrt(math.fsum(x * x for x in v))
    return tuple(x / norm for x in v)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


class Topic(msgspec.Struct, frozen=True):
    id: str
    centroid: tuple[float, ...]  # running mean of member unit vectors (not itself unit length)
    size: int
    member_ids: tuple[str, ...] = ()

    def similarity(self, unit_vector: Sequence[float]) -> float:
        norm = math.sqrt(math.fsum(x * x for x in self.centroid))
        return _dot(self.centroid, unit_vector) / norm if norm else 0.0


class Assignment(msgspec.Struct, frozen=True):
    topic_id: str
    created: bool
    similarity: float  # to the chosen topic's centroid before the update (1.0 when created)


class TopicModel(msgspec.Struct, frozen=True):
    threshold: float = 0.6
    topics: tuple[Topic, ...] = ()

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise InvalidRequest.single("threshold", "must be a cosine in [-1, 1]")

    def nearest(self, vector: Sequence[float]) -> tuple[Topic, float] | None:
        """The topic nearest ``vector`` by cosine (ties to the earliest topic), or None if empty."""
        u = unit(vector)
        best: tuple[Topic, float] | None = None
        for topic in self.topics:
            sim = topic.similarity(u)
            if best is None or sim > best[1]:
                best = (topic, sim)
        return best

    def assign(self, item_id: str, vector: Sequence[float], new_topic_id: str) -> tuple[TopicModel, Assignment]:
        """Assign ``item_id`` to the nearest topic at or above the threshold, or to a new topic
        called ``new_topic_id``. The chosen centroid moves to the running mean."""
        u = unit(vector)
        found = self.nearest(u)
        if found is not None and found[1] >= self.threshold:
            topic, sim = found
            if len(topic.centroid) != len(u):
                raise InvalidRequest.single("vector", "dimension differs from the topic's")
            n = topic.size
            centroid = tuple((c * n + x) / (n + 1) for c, x in zip(topic.centroid, u, strict=True))
            moved = Topic(topic.id, centroid, n + 1, (*topic.member_ids, item_id))
            topics = tuple(moved if t.id == topic.id else t for t in self.topics)
            return TopicModel(self.threshold, topics), Assignment(topic.id, False, sim)
        if any(t.id == new_topic_id for t in self.topics):
            raise InvalidRequest.single("new_topic_id", f"topic {new_topic_id!r} already exists")
        created = Topic(new_topic_id, u, 1, (item_id,))
        return TopicModel(self.threshold, (*self.topics, created)), Assignment(new_topic_id, True, 1.0)


def keyword_labels(texts_by_topic: Mapping[str, Sequence[str]], k: int = 3) -> dict[str, tuple[str, ...]]:
    """Top ``k`` terms of each topic by tf-idf: tf is the term's share of the topic's tokens, idf is
    ``log(1 + N / df)`` over the N topics. Ties break alphabetically, so labels are deterministic."""
    if k < 1:
        raise InvalidRequest.single("k", "must be >= 1")
    counts = {tid: Counter(t for text in texts for t in tokenize(text)) for tid, texts in texts_by_topic.items()}
    df: Counter[str] = Counter()
    for c in counts.values():
        df.update(c.keys())
    n = len(counts)
    labels: dict[str, tuple[str, ...]] = {}
    for tid, c in counts.items():
        total = sum(c.values())
        scored = sorted(((-(cnt / total) * math.log(1 + n / df[term]), term) for term, cnt in c.items()))
        labels[tid] = tuple(term for _, term in scored[:k])
    return labels
