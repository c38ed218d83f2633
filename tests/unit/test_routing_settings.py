"""Routing settings: the ``[routing]`` table of the settings file (the example in docs/routing.md,
verbatim) or ``LUMINA_ROUTING`` as JSON, their defaults (a deployment without configuration keeps
the requested or default model), and one-line errors naming the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.settings import SettingsError, load_settings
from domain.routing import RetryPolicy, Strategy

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def test_the_documented_settings_table_loads(tmp_path: Path) -> None:
    [example] = re.findall(r"```toml lumina\.toml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (tmp_path / "lumina.toml").write_text(example)
    routing = load_settings({"LUMINA_CONFIG": str(tmp_path / "lumina.toml")}).routing
    assert routing.retry == RetryPolicy(max_attempts=2, base_delay_s=0.1, max_delay_s=1.0, max_retry_after_s=1.0)
    assert routing.breaker.consecutive_failures == 5 and routing.timeouts.total_s == 600.0
    assert not routing.hedging.enabled and routing.publish_decisions and routing.breaker_refresh_s == 1.0


def test_defaults_keep_the_named_or_default_model() -> None:
    routing = load_settings({}).routing
    assert routing.rules.strategy is Strategy.PINNED and routing.pinned_fallback_only
    assert routing.retry.max_attempts == 2 and routing.retry.max_retry_after_s == 1.0


def test_lumina_routing_is_json_and_errors_name_the_setting() -> None:
    routing = load_settings({"LUMINA_ROUTING": '{"aliases": {"fast": "sim-small"}, "hedging": {"enabled": true}}'}).routing
    assert routing.aliases == {"fast": "sim-small"} and routing.hedging.enabled
    with pytest.raises(SettingsError, match=r"LUMINA_ROUTING: retry\.max_attempts: must be at least 1"):
        load_settings({"LUMINA_ROUTING": '{"retry": {"max_attempts": 0}}'})
    with pytest.raises(SettingsError, match="LUMINA_ROUTING: expected a JSON object"):
        load_settings({"LUMINA_ROUTING": "{not json"})
    with pytest.raises(SettingsError, match="unknown field `nope`"):
        load_settings({"LUMINA_ROUTING": '{"nope": 1}'})
