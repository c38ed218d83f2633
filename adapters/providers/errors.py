"""Translating OpenAI SDK exceptions (also raised for OpenAI-compatible servers) to domain errors.

    openai exception                          domain error
    APITimeoutError                           UpstreamTimeout
    APIConnectionError                        UpstreamUnavailable
    RateLimitError                            RateLimited(retry_after from retry-after[-ms])
      ... code insufficient_quota             PermissionDenied (retrying will not help)
    AuthenticationError (401)                 AuthenticationFailed
    PermissionDeniedError (403)               PermissionDenied
    BadRequestError (400)                     ContextLengthExceeded (code context_length_exceeded),
                                              ContentFiltered (code content_filter / content_policy_violation),
                                              else UpstreamInvalidRequest
    408, 504                                  UpstreamTimeout
    503, 529                                  Overloaded
    other 5xx                                 UpstreamUnavailable
    other 4xx (404, 409, 413, 422, ...)       UpstreamInvalidRequest
    APIError without status (error event      by its body: context_length_exceeded -> ContextLengthExceeded,
      in a stream)                            invalid_request_error -> UpstreamInvalidRequest,
                                              else UpstreamUnavailable
    anything else from the SDK                UpstreamUnavailable

Messages carry the vendor's message (never its raw body), with the API key redacted.
"""

from __future__ import annotations

import email.utils
import time

import openai

from domain.errors import (
    AuthenticationFailed,
    ContentFiltered,
    ContextLengthExceeded,
    Overloaded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["parse_retry_after", "redact", "translate_openai_error"]

MAX_MESSAGE = 500
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` (nor its longer prefixes), truncated to ``MAX_MESSAGE``."""
    if secret:
        text = text.replace(secret, "[redacted]")
        if len(secret) >= 12:  # a truncated echo of the key still gives most of it away
            text = text.replace(secret[: len(secret) * 2 // 3], "[redacted]")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def parse_retry_after(headers: object) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _vendor_message(exc: openai.OpenAIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def translate_openai_error(exc: openai.OpenAIError, *, provider: str, secret: str = "") -> ProviderError:
    """The domain error for ``exc``; the caller raises it ``from exc``."""
    message = redact(_vendor_message(exc), secret)
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout("request timed out", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable("connection error", provider=provider)
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc, exc.status_code, message, provider)
    if isinstance(exc, openai.APIError):  # an error event inside a stream: no HTTP status
        code = exc.code or ""
        if code in _CONTEXT_CODES:
            return ContextLengthExceeded(message, provider=provider)
        if exc.type == "invalid_request_error":
            return UpstreamInvalidRequest(message, provider=provider)
        return UpstreamUnavailable(f"stream error: {message}", provider=provider)
    return UpstreamUnavailable(f"client error: {message}", provider=provider)


def _from_status(exc: openai.APIStatusError, status: int, message: str, provider: str) -> ProviderError:
    code = exc.code or ""
    text = f"HTTP {status}: {message}"
    if status == 429:
        if code == "insufficient_quota":
            return PermissionDenied(text, provider=provider)
        return RateLimited(text, provider=provider, retry_after=parse_retry_after(exc.response.headers))
    if status == 401:
        return AuthenticationFailed(text, provider=provider)
    if status == 403:
        return PermissionDenied(text, provider=provider)
    if status == 400:
        if code in _CONTEXT_CODES:
            return ContextLengthExceeded(text, provider=provider)
        if code in _FILTER_CODES:
            return ContentFiltered(text, provider=provider)
        return UpstreamInvalidRequest(text, provider=provider)
    if status in (408, 504):
        return UpstreamTimeout(text, provider=provider)
    if status in (503, 529):
        return Overloaded(text, provider=provider)
    if status >= 500:
        return UpstreamUnavailable(text, provider=provider)
    return UpstreamInvalidRequest(text, provider=provider)
