"""The routing config loads from TOML (the example in docs/routing.md, verbatim) and refuses bad
values with the field named."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from domain.errors import InvalidRequest
from domain.routing import BalancedWeights, Group, RoutingConfig, StepDownPolicy, Strategy

DOC = Path(__file__).resolve().parents[3] / "docs" / "routing.md"


def test_the_documented_example_loads() -> None:
    [example] = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)
    config = msgspec.toml.decode(example.encode(), type=RoutingConfig)
    assert config.rules.strategy is Strategy.BALANCED
    assert config.rules.deny_providers == frozenset({"experimental"})
    assert config.rules.step_down == StepDownPolicy(allowed=True, below_headroom=0.2, min_quality=0.4)
    acme = config.rules_for("acme")
    assert acme.strategy is Strategy.QUALITY and acme.require_tags == frozenset({"eu", "no-training"})
    assert config.rules_for("someone-else") is config.rules
    assert config.groups["fast"].strategy is Strategy.FASTEST and config.groups["smart"].reasoning
    assert config.fallbacks["gpt-4o"] == ("claude-sonnet-4-5", "gemini-2.5-pro")
    assert config.aliases == {"default-chat": "gpt-4o"}
    assert config.model_tags["gpt-4o"] == frozenset({"us"})


@pytest.mark.parametrize(
    "build",
    [
        lambda: RoutingConfig(quality={"m": 1.5}),
        lambda: RoutingConfig(rr_weights={"m": 0.0}),
        lambda: RoutingConfig(aliases={"fast": "m"}, groups={"fast": Group(models=("m",))}),
        lambda: RoutingConfig(max_fallbacks=-1),
        lambda: Group(),
        lambda: BalancedWeights(cost=0, latency=0, quality=0),
        lambda: StepDownPolicy(below_headroom=2.0),
    ],
)
def test_bad_values_are_refused(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest):
        build()
