"""Shared by the adapters' ``complete`` (one non-streaming call): the chunks of a whole answer in
the shape the ``ProviderClient`` port promises for it."""

from __future__ import annotations

from collections.abc import Iterable

from domain.chat import Chunk, ReasoningDelta, TextDelta

__all__ = ["whole_answer_chunks"]


def whole_answer_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """``chunks`` (the content of one whole answer, as its stream mapping gives them) as one
    ``ReasoningDelta`` (the reasoning joined, if any), one ``TextDelta`` (the text joined, if any),
    then the rest (each tool call's single ``ToolCallDelta``) in their order."""
    reasoning: list[str] = []
    text: list[str] = []
    rest: list[Chunk] = []
    for chunk in chunks:
        if isinstance(chunk, ReasoningDelta):
            reasoning.append(chunk.text)
        elif isinstance(chunk, TextDelta):
            text.append(chunk.text)
        else:
            rest.append(chunk)
    out: list[Chunk] = []
    if joined := "".join(reasoning):
        out.append(ReasoningDelta(text=joined))
    if joined := "".join(text):
        out.append(TextDelta(text=joined))
    out.extend(rest)
    return out
