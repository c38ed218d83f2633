"""The model health gauges: the latest health the monitor reported per model, rendered when scraped."""

from __future__ import annotations

from adapters.telemetry.metrics import Metrics
from domain.health import HealthState, ModelHealth


def test_the_gauges_show_each_models_latest_health() -> None:
    metrics = Metrics()
    metrics.set_model_health(ModelHealth("sim", "small", latency_s=0.5))
    metrics.set_model_health(ModelHealth("sim", "big", HealthState.UNHEALTHY, error_rate=0.75, latency_s=2.0, ttft_s=0.25))
    metrics.set_model_health(ModelHealth("sim", "small", HealthState.DEGRADED, error_rate=0.5, latency_s=1.5))
    text = metrics.render().decode()
    assert "# TYPE lumina_model_health_state gauge" in text
    assert 'lumina_model_health_state{model="small",provider="sim"} 1.0' in text  # the later report replaced the first
    assert 'lumina_model_health_state{model="big",provider="sim"} 2.0' in text
    assert 'lumina_model_error_rate{model="big",provider="sim"} 0.75' in text
    assert 'lumina_model_latency_seconds{model="small",provider="sim"} 1.5' in text
    assert 'lumina_model_ttft_seconds{model="big",provider="sim"} 0.25' in text
    assert 'lumina_model_ttft_seconds{model="small"' not in text  # no time to first token observed yet
