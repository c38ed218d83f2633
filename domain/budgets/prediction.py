"""Predictive reservations: how many output tokens a model is likely to write for a kind of task,
learned from history as quantiles, and the reservation a request needs.

A reservation that is an upper bound of the request's cost (prompt plus ``max_tokens`` of output)
makes the hard-budget guarantee exact; reserving the p90 of what the model actually writes for the
task admits more requests when ``max_tokens`` is large or absent, at the price of a bounded overrun
(the few requests above the quantile settle for more than they held).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from domain.cost import Price
from domain.errors import InvalidRequest

__all__ = [
    "OutputTokenStats",
    "output_token_stats",
    "predict_output_tokens",
    "quantile",
    "reservation_micros",
    "task_label",
]

MIN_SAMPLES = 20
"""Below this many observations, the prediction is the caller's default, not a quantile."""


def quantile(samples: Sequence[int | float], q: float) -> float:
    """The ``q``-quantile with linear interpolation between order statistics (like Postgres'
    ``percentile_cont`` and numpy's default)."""
    if not 0 <= q <= 1:
        raise InvalidRequest.single("q", "a quantile lies between 0 and 1")
    if not samples:
        raise InvalidRequest.single("samples", "no observations")
    ordered = sorted(samples)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class OutputTokenStats(msgspec.Struct, frozen=True):
    model: str
    task: str
    samples: int
    p50: float
    p90: float
    p99: float
    max: int


def output_token_stats(model: str, task: str, samples: Sequence[int]) -> OutputTokenStats | None:
    if not samples:
        return None
    return OutputTokenStats(
        model, task, len(samples), quantile(samples, 0.5), quantile(samples, 0.9), quantile(samples, 0.99), max(samples)
    )


def predict_output_tokens(
    samples: Sequence[int],
    *,
    q: float = 0.9,
    default: int,
    cap: int | None = None,
    min_samples: int = MIN_SAMPLES,
) -> int:
    """Output tokens to reserve for: the ``q``-quantile of ``samples`` (rounded up) once there are
    ``min_samples`` of them, else ``default``; never more than ``cap`` (the request's
    ``max_tokens`` or the model's limit: the model cannot write more)."""
    value = math.ceil(quantile(samples, q) - 1e-9) if len(samples) >= min_samples else default
    value = max(value, 0)
    return min(value, cap) if cap is not None else value


def reservation_micros(price: Price, input_tokens: int, output_tokens: int, *, cached_input_tokens: int = 0) -> int:
    """The cost of ``input_tokens`` in and ``output_tokens`` out, rounded up (a reservation must
    not fall short of the same usage's settled cost, which ``Price.cost_micros`` rounds)."""
    if input_tokens < 0 or output_tokens < 0 or cached_input_tokens < 0:
        raise InvalidRequest.single("tokens", "cannot be negative")
    uncached = max(input_tokens - cached_input_tokens, 0)
    micros = (
        uncached * price.input_per_mtok
        + min(cached_input_tokens, input_tokens) * price.cached_input_per_mtok
        + output_tokens * price.output_per_mtok
    )
    return math.ceil(micros - 1e-9) if micros > 0 else 0


def task_label(*, tools: bool = False, json_schema: bool = False, reasoning: bool = False) -> str:
    """A coarse kind of task for output-length statistics: "tools", "json", "reasoning" or "chat"."""
    if tools:
        return "tools"
    if json_schema:
        return "json"
    if reasoning:
        return "reasoning"
    return "chat"
