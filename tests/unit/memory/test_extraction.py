"""Rule-based statement extraction and the near-duplicate merge rule."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
from domain.memory.extraction import (
    Statement,
    duplicate_of,
    extract_statements,
    reinforced,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I live in Berlin and I love it.", [("lives in", "Berlin", False)]),
        ("Actually I moved to Lisbon last month!", [("lives in", "Lisbon", False)]),
        ("I work at Acme Corp as an engineer.", [("works at", "Acme Corp", False)]),
        ("I work as a nurse.", [("works as", "nurse", False)]),
        ("I'm from Brazil, by the way.", [("is from", "Brazil", False)]),
        ("My favourite colour is blue.", [("favourite colour is", "blue", False)]),
        ("my sister's name is Carla", [("sister's name is", "Carla", False)]),
        ("I no longer live in Paris.", [("lives in", "Paris", True)]),
        ("I don't work at Google anymore.", [("works at", "Google", True)]),
        ("I quit my job at Initech.", [("works at", "Initech", True)]),
        ("I live in New York City now. My dog's name is Rex.", [("lives in", "New York City", False), ("dog's name is", "Rex", False)]),
    ],
)
def test_statements(text: str, expected: list[tuple[str, str, bool]]) -> None:
    found = extract_statements(text, "user")
    assert [(s.predicate, s.object, s.retraction) for s in found] == expected
    assert all(s.subject == "user" for s in found)


@pytest.mark.parametrize(
    "text",
    [
        "My point is that we should go.",  # an opinion, not an attribute
        "My guess is the weather will hold.",
        "I live in the big old yellow house at the end of the road.",  # object too long
        "Do you live in Paris?",  # not the speaker's statement
        "",
    ],
)
def test_no_statement(text: str) -> None:
    assert extract_statements(text, "user") == ()


def test_rendering_and_speaker() -> None:
    (s,) = extract_statements("I moved to Porto.", "Caroline")
    assert s == Statement("Caroline", "lives in", "Porto", "Caroline lives in Porto")
    (r,) = extract_statements("I no longer live in Porto.", "Caroline")
    assert r.text == "Caroline no longer lives in Porto" and r.retraction
    (m,) = extract_statements("My favourite food is sushi.", "user")
    assert m.text == "user's favourite food is sushi"
    assert extract_statements("I live in Rome.", "  ") == ()


def test_duplicate_of_merges_the_later_into_the_earliest_close_enough() -> None:
    me = (100.0, "m5")
    others = [(50.0, "m2", 0.97), (10.0, "m1", 0.96), (120.0, "m9", 0.99), (100.0, "m5", 1.0), (5.0, "m0", 0.5)]
    assert duplicate_of(me, others, 0.95) == ("m1", 0.96)  # the earliest at or above the threshold
    assert duplicate_of(me, others, 0.98) is None  # only a later one (m9) is that close: it merges into me
    assert duplicate_of((10.0, "m1"), [(10.0, "m0", 0.99)], 0.95) == ("m0", 0.99)  # same time: smaller id first
    with pytest.raises(InvalidRequest):
        duplicate_of(me, others, 1.5)


def test_reinforced() -> None:
    assert reinforced(0.5, 0.4) == pytest.approx(0.6)
    assert reinforced(0.95, 0.99) == 1.0
