"""Rule-based facts in everyday dialogue: speaker-attributed events (dated from the turn's time),
plans, activities, preferences, possessions and identities; what is not a fact is left alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.memory.dialogue import extract_dialogue_facts, resolve_when

AT = datetime(2023, 5, 8, 13, 56, tzinfo=UTC).timestamp()  # a Monday


def day(ts: float | None) -> str:
    assert ts is not None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("text", "kind", "predicate", "obj", "rendered", "valid_from"),
    [
        ("I went to a LGBTQ support group yesterday and it was so powerful.", "event",
         "went to a LGBTQ support group on 2023-05-07", "2023-05-07", "Mel went to a LGBTQ support group on 2023-05-07", "2023-05-07"),
        ("Last Saturday I ran a charity race for mental health.", "event",
         "ran a charity race for mental health on 2023-05-06", "2023-05-06", "Mel ran a charity race for mental health on 2023-05-06", "2023-05-06"),
        ("Oh yeah, we went to the beach two weeks ago!", "event",
         "went to the beach on 2023-04-24", "2023-04-24", "Mel went to the beach on 2023-04-24", "2023-04-24"),
        ("I talked about my transgender journey.", "event",
         "talked about their transgender journey on 2023-05-08", "2023-05-08", "Mel talked about their transgender journey on 2023-05-08", "2023-05-08"),
        ("We're going camping next month!", "plan", "plans to go camping", "2023-06-07", "Mel plans to go camping (around 2023-06-07)", "2023-05-08"),
        ("I'm planning to adopt a child.", "plan", "plans to adopt a child", "open", "Mel plans to adopt a child", "2023-05-08"),
        ("I'm putting together an art show next month!", "plan", "plans putting together an art show", "2023-06-07",
         "Mel is putting together an art show (around 2023-06-07)", "2023-05-08"),
        ("I'm researching adoption agencies.", "activity", "is researching adoption agencies", "ongoing", "Mel is researching adoption agencies", "2023-05-08"),
        ("I've been running farther to de-stress.", "activity", "is running farther to de-stress", "ongoing", "Mel has been running farther to de-stress", "2023-05-08"),
        ("I love hiking with my dog.", "preference", "feels about hiking", "loves", "Mel loves hiking", "2023-05-08"),
        ("I'm passionate about dancing, it's my escape.", "preference", "feels about dancing", "loves", "Mel loves dancing", "2023-05-08"),
        ("My kids love nature.", "preference", "feels about nature", "loves", "Mel's kids love nature", "2023-05-08"),
        ("I have two cats.", "has", "has two cats", "yes", "Mel has two cats", "2023-05-08"),
        ("I'm a single parent.", "identity", "is a single parent", "yes", "Mel is a single parent", "2023-05-08"),
    ],
)
def test_facts(text: str, kind: str, predicate: str, obj: str, rendered: str, valid_from: str) -> None:
    (fact,) = extract_dialogue_facts(text, "Mel", AT)
    assert (fact.kind, fact.predicate, fact.object, fact.text, day(fact.valid_from)) == (kind, predicate, obj, rendered, valid_from)
    assert fact.subject == "Mel" or fact.subject == "Mel's kids"
    assert not fact.retraction


def test_a_retraction_names_the_preference_it_closes() -> None:
    (fact,) = extract_dialogue_facts("I don't like hiking anymore.", "Mel", AT)
    assert fact.retraction and fact.kind == "preference" and fact.predicate == "feels about hiking"
    (liked,) = extract_dialogue_facts("I love hiking.", "Mel", AT)
    assert liked.predicate == fact.predicate  # same key: the retraction closes the fact


@pytest.mark.parametrize(
    "text",
    [
        "Do you like painting?",  # a question
        "I think it's great.",  # an opinion about the conversation
        "I'm so happy for you!",
        "I won't quit!",  # negated
        "I'll send you a pic.",  # about the other speaker
        "Thanks, Caroline! I'm sure you'll do great.",
        "I'm gonna make it happen!",  # says nothing
        "You went to the beach?",
        "",
    ],
)
def test_no_fact(text: str) -> None:
    assert extract_dialogue_facts(text, "Mel", AT) == ()


def test_several_clauses_and_no_repeats() -> None:
    facts = extract_dialogue_facts("I went to a pottery class yesterday, and I love pottery. I love pottery!", "Mel", AT)
    assert [f.kind for f in facts] == ["event", "preference"]
    assert extract_dialogue_facts("I love pottery.", " ", AT) == ()


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("yesterday", "2023-05-07"), ("today", "2023-05-08"), ("last week", "2023-05-01"), ("last year", "2022-05-08"),
        ("last Friday", "2023-05-05"), ("last Monday", "2023-05-01"), ("three days ago", "2023-05-05"),
        ("a few weeks ago", "2023-04-17"), ("next month", "2023-06-07"), ("tomorrow", "2023-05-09"),
    ],
)
def test_resolve_when(phrase: str, expected: str) -> None:
    assert day(resolve_when(phrase, AT)) == expected


def test_resolve_when_without_a_day() -> None:
    assert resolve_when("recently", AT) is None
