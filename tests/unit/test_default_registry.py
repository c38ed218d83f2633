"""What `lumina up` registers at start: the vendors whose keys are set (models from the shipped
catalogue), else the provider simulator, plainly labelled "simulated"."""

from __future__ import annotations

from api.bootstrap import SIMULATOR, default_registry
from api.settings import load_settings


def test_without_keys_the_simulator_is_the_enabled_default() -> None:
    providers, models, keys = default_registry(load_settings({}))
    [sim] = providers
    assert (sim.name, sim.label, sim.enabled) == (SIMULATOR, "simulated", True)
    assert [m.name for m in models if m.is_default] == ["sim-small"]
    assert set(keys) == {SIMULATOR}


def test_vendor_keys_register_the_real_providers_and_disable_the_simulator() -> None:
    env = {"OPENAI_API_KEY": "sk-openai-test", "ANTHROPIC_API_KEY": "sk-ant-test", "GOOGLE_API_KEY": "g-test"}
    providers, models, keys = default_registry(load_settings(env))
    by_name = {p.name: p for p in providers}
    assert set(by_name) == {"openai", "anthropic", "gemini", SIMULATOR}
    assert by_name[SIMULATOR].enabled is False and by_name["anthropic"].label == "Anthropic"
    assert keys["anthropic"] == "sk-ant-test" and keys["gemini"] == "g-test"
    names = {m.name: m for m in models}
    assert names["claude-haiku-4-5"].provider == "anthropic" and names["gemini-2.5-flash"].provider == "gemini"
    assert [m.name for m in models if m.is_default] == ["gpt-4o-mini"]
    assert names["gpt-4o"].price.input_per_mtok > 0  # priced from the catalogue
