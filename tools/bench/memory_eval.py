"""Memory retrieval evaluation on LoCoMo: evidence recall@5/10/20, the tokens those results cost,
and query latency, for ``SearchMemory`` (hybrid) against plain dense retrieval, in one run.

    .venv/bin/python -m tools.bench.memory_eval [--data PATH] [--threads 2] [--int8] [--candidates 50]

Starts an embedded PostgreSQL 18 + pgvector in a temporary directory, migrates it to head, and
for each conversation of ``locomo-dev.json`` (one tenant per conversation, user ``eval``)
ingests every turn through ``IngestTurns`` with the real all-MiniLM-L6-v2 ONNX embedder. A turn's
memory text is ``"<speaker>: <text>"`` plus ``[shares a photo: <caption>]`` when it has one; its
time is the session's date (plus 30 s per turn). Then it asks every question of categories 1-4
that has evidence, twice:

- **hybrid**: ``SearchMemory`` (full-text + vector, RRF, graph expansion over ``follows``
  edges, recency and importance, MMR), k = 20, no token limit; also packed into 2,000 tokens;
- **dense**: one ``VectorStore.query`` of the question's vector, k = 20 (the reference method).

A question counts as recalled at k when one of the first k results is one of its evidence turns
(``dia_id``). Tokens are the whitespace approximation of ``approximate_tokens`` (4 per 3
words; tiktoken is not available offline), averaged over questions. Latency is per question,
wall time, including the query's embedding. Nothing here is tuned per conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.embedded.postgres import start_embedded_postgres
from adapters.onnx.embedder import DEFAULT_MODEL_DIR, OnnxEmbedder
from adapters.postgres.engine import create_engine
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.migrate import upgrade_async
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.search import approximate_tokens, vector_filter

__all__ = ["load_conversations", "main"]

_ROOT = Path(__file__).resolve().parents[2]
_DATA = (_ROOT.parent / "shared/data/locomo/locomo-dev.json", Path("/work/shared/data/locomo/locomo-dev.json"))
KS = (5, 10, 20)
BUDGET = 2000
USER = "eval"


class FixedClock:
    """"Now" is just after the conversation's last session (recency is relative to it)."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def _session_time(text: str) -> float:
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC).timestamp()


def load_conversations(path: Path) -> list[dict[str, Any]]:
    """``[{id, turns: [TurnInput], questions: [(question, evidence set, category)]}]``."""
    out = []
    for record in json.loads(path.read_text()):
        conv = record["conversation"]
        sessions = sorted((k for k in conv if k.startswith("session_") and k[8:].isdigit()), key=lambda k: int(k[8:]))
        turns: list[TurnInput] = []
        for key in sessions:
            start = _session_time(conv[f"{key}_date_time"])
            for i, turn in enumerate(conv[key]):
                text = turn.get("text", "")
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                turns.append(TurnInput(role=turn["speaker"], text=text, at=start + 30 * i, source_id=turn["dia_id"]))
        questions = [
            (qa["question"], set(qa["evidence"]), qa["category"])
            for qa in record["qa"]
            if qa.get("category") in (1, 2, 3, 4) and qa.get("evidence")
        ]
        out.append({"id": record["sample_id"], "turns": turns, "questions": questions})
    return out


def _hit(sources: list[str | None], evidence: set[str], k: int) -> bool:
    return any(s in evidence for s in sources[:k])


def _packed(texts: list[str], budget: int) -> list[int]:
    """Indexes greedily packed into ``budget`` (same rule as ``domain.memory.packing``, overhead 4)."""
    used, picked = 0, []
    for i, text in enumerate(texts):
        cost = approximate_tokens(text) + 4
        if used + cost <= budget:
            picked.append(i)
            used += cost
    return picked


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _run(args: argparse.Namespace) -> None:
    data = Path(args.data) if args.data else next((p for p in _DATA if p.is_file()), _DATA[0])
    conversations = load_conversations(data)
    embedder = OnnxEmbedder(DEFAULT_MODEL_DIR, int8=args.int8, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="lumina-memeval-") as tmp:
        t0 = time.perf_counter()
        pg = start_embedded_postgres(Path(tmp) / "pg", database="memeval")
        try:
            await upgrade_async(pg.url)
            print(f"embedded postgres ready and migrated in {time.perf_counter() - t0:.1f}s", flush=True)
            engine = create_engine(pg.url, pool_size=4)
            try:
                await _evaluate(conversations, engine, embedder, args.candidates)
            finally:
                await engine.dispose()
        finally:
            pg.stop()


async def _evaluate(
    conversations: list[dict[str, Any]], engine: Any, embedder: OnnxEmbedder, candidates: int
) -> None:
    repo, store = PostgresMemoryRepository(engine), PgVectorStore(engine)
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds())
    keys = [*(f"r@{k}" for k in KS), *(f"tok@{k}" for k in KS), "lat", f"r@{BUDGET}tok", f"tok@{BUDGET}"]
    stats: dict[str, dict[str, list[float]]] = {name: {key: [] for key in keys} for name in ("hybrid", "dense")}
    by_category: dict[int, list[bool]] = {}
    for conv in conversations:
        tenant = f"locomo-{conv['id']}"
        t0 = time.perf_counter()
        for start in range(0, len(conv["turns"]), 64):  # one call per chunk of a session's turns
            await ingest(tenant, USER, conv["id"], conv["turns"][start : start + 64])
        elapsed = time.perf_counter() - t0
        print(f"{conv['id']}: ingested {len(conv['turns'])} turns in {elapsed:.1f}s", flush=True)
        now = max(t.at for t in conv["turns"]) + 86400
        search = SearchMemory(repo, store, embedder, FixedClock(now), candidates=candidates)
        await search(tenant, USER, "warm up", k=5)
        for n, (question, evidence, category) in enumerate(conv["questions"], start=1):
            t = time.perf_counter()
            response = await search(tenant, USER, question, k=max(KS), token_budget=10**9)
            stats["hybrid"]["lat"].append(time.perf_counter() - t)
            hybrid = ([r.source_id for r in response.results], [r.text for r in response.results])
            t = time.perf_counter()
            (vector,) = await embedder.embed([question])
            hits = await store.query(tenant, vector, max(KS), vector_filter(USER, None))
            stats["dense"]["lat"].append(time.perf_counter() - t)
            ids = {m.id: m for m in await repo.get_many(tenant, [h.id for h in hits])}
            dense = ([ids[h.id].source_id for h in hits], [h.text or "" for h in hits])
            for name, (sources, texts) in (("hybrid", hybrid), ("dense", dense)):
                for k in KS:
                    stats[name][f"r@{k}"].append(float(_hit(sources, evidence, k)))
                    stats[name][f"tok@{k}"].append(sum(approximate_tokens(x) for x in texts[:k]))
                picked = _packed(texts, BUDGET)
                stats[name][f"r@{BUDGET}tok"].append(float(any(sources[i] in evidence for i in picked)))
                stats[name][f"tok@{BUDGET}"].append(sum(approximate_tokens(texts[i]) + 4 for i in picked))
            by_category.setdefault(category, []).append(_hit(hybrid[0], evidence, 10))
            if n % 50 == 0:
                print(f"  {conv['id']}: {n}/{len(conv['questions'])} questions", flush=True)
    questions = len(stats["hybrid"]["lat"])
    print(f"\n{questions} questions (categories 1-4 with evidence), {len(conversations)} conversations")
    print("tokens: whitespace approximation, ceil(words * 4 / 3)")
    header = "method  " + "".join(f"  R@{k:<3} tok@{k:<4}" for k in KS) + f"  R@≤{BUDGET}tok  tok  p50 ms  p99 ms"
    print(header)
    for name, s in stats.items():
        row = f"{name:<8}" + "".join(
            f"  {statistics.fmean(s[f'r@{k}']):.3f} {statistics.fmean(s[f'tok@{k}']):>7.0f}" for k in KS
        )
        row += f"  {statistics.fmean(s[f'r@{BUDGET}tok']):.3f}     {statistics.fmean(s[f'tok@{BUDGET}']):>5.0f}"
        row += f"  {_pct(s['lat'], 0.5) * 1000:6.1f}  {_pct(s['lat'], 0.99) * 1000:6.1f}"
        print(row)
    print("hybrid recall@10 by category: " + ", ".join(
        f"{c}: {statistics.fmean(v):.3f} (n={len(v)})" for c, v in sorted(by_category.items())
    ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--candidates", type=int, default=50, help="depth of each retrieval list")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
