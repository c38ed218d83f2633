"""Memory retrieval evaluation on LoCoMo: evidence recall@5/10/20, the tokens those results cost,
and query latency, for ``SearchMemory`` (hybrid) against plain dense retrieval, in one run.

    .venv/bin/python -m tools.bench.memory_eval [--data PATH] [--threads 2] [--int8]
        [--window 1] [--scoring bm25|ts_rank] [--rrf-k 60] [--graph 0] [--recency 0.2]
        [--mmr 0.7] [--candidates 50] [--pad 10000] [--tune] [--ablations]

Starts an embedded PostgreSQL 18 + pgvector in a temporary directory, migrates it to head, and
for each conversation of ``locomo-dev.json`` (one tenant per conversation, user ``eval``)
ingests every turn through ``IngestTurns`` with the real all-MiniLM-L6-v2 ONNX embedder. A turn's
memory text is ``"<speaker>: <text>"`` plus ``[shares a photo: <caption>]`` when it has one; its
time is the session's date (plus 30 s per turn). Then it asks every question of categories 1-4
that has evidence:

- **hybrid**: ``SearchMemory`` (BM25 full-text + vector over context windows, RRF, recency,
  importance, MMR, passages), k = 20, no token limit (the first 5/10 of its results are what
  k = 5/10 returns); recall within 2,000 tokens packs those results greedily (4 tokens of
  overhead each);
- **dense**: one ``VectorStore.query`` of the question's vector over *single turns* (a second
  collection holding each turn's own embedding), k = 20: the dataset's reference method.

A result covers the turns it shows: its hit and the context turns of its passage. A question
counts as recalled at k when one of the first k results covers one of its evidence turns
(``dia_id``). Tokens are the whitespace approximation of ``approximate_tokens`` (4 per 3 words;
tiktoken is not available offline) of what the results show, averaged over questions (the max is
printed too). Latency is per question, wall time, including the query's embedding.

``--pad N`` adds distractor memories to each tenant's user until it holds N memories, then
re-measures the hybrid's recall and latency: synthetic conversations (20 turns each, spread over the
same months) whose turns are 1-3 sentences drawn at random (fixed seed) from the *other*
conversation of the file, its speakers' names replaced by made-up ones. Real conversational text,
so full-text and vector statistics look like a real store; none of it can be evidence.

``--tune`` is the held-out check of the two fusion parameters, the RRF constant k and the
recency weight: for each conversation, (k, recency) in (10, 30, 60, 100) x (0, 0.05, 0.1, 0.2) is
chosen by recall@10 on it and reported on the *other* conversation (on the padded store when
``--pad``). Nothing else is tuned here; every other setting is a textbook default or the product
default.

``--db DIR`` keeps the database in DIR and reuses what an earlier run ingested there (with the
same window and embedder); the padded store is a tenant of its own (the conversation plus its
distractors), so ``--padded-only`` iterates on it without re-ingesting. ``--separate`` runs the
path before the one-statement hybrid read (separate full-text, vector and neighbour reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec.structs

from adapters.embedded.postgres import start_embedded_postgres
from adapters.onnx.embedder import DEFAULT_MODEL_DIR, OnnxEmbedder
from adapters.postgres.engine import create_engine
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.migrate import upgrade_async
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.search import DEFAULT_WEIGHTS, approximate_tokens, vector_filter
from domain.memory.ranking import RankingWeights
from domain.memory.vectors import VectorRecord

__all__ = ["distractors", "load_conversations", "main"]

_ROOT = Path(__file__).resolve().parents[2]
_DATA = (_ROOT.parent / "shared/data/locomo/locomo-dev.json", Path("/work/shared/data/locomo/locomo-dev.json"))
KS = (5, 10, 20)
BUDGET = 2000
OVERHEAD = 4
USER = "eval"
TUNE_GRID = tuple((k, r) for k in (10, 30, 60, 100) for r in (0.0, 0.05, 0.1, 0.2))  # (RRF k, recency weight)
_NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall", "Logan",
          "Morgan", "Parker", "Quinn", "Reese", "Rowan", "Sawyer", "Skyler", "Taylor")


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
    """``[{id, speakers, turns: [TurnInput], questions: [(question, evidence set, category)]}]``."""
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
        speakers = (conv["speaker_a"], conv["speaker_b"])
        out.append({"id": record["sample_id"], "speakers": speakers, "turns": turns, "questions": questions})
    return out


def distractors(source: dict[str, Any], count: int, start: float, end: float, seed: int = 7) -> list[list[TurnInput]]:
    """``count`` synthetic turns in conversations of 20: each turn is 1-3 sentences drawn from
    ``source``'s turns, with its speakers' names replaced by made-up ones; times spread uniformly
    over ``[start, end)``. Source ids are ``pad:<n>`` (never evidence)."""
    rng = random.Random(seed)
    names = re.compile(r"\b(" + "|".join(re.escape(s) for s in source["speakers"]) + r")\b")
    sentences = [
        s.strip()
        for turn in source["turns"]
        for s in re.split(r"(?<=[.!?])\s+", turn.text)
        if len(s.split()) >= 3
    ]
    out: list[list[TurnInput]] = []
    n = 0
    while n < count:
        people = rng.sample(_NAMES, 2)
        at = rng.uniform(start, end)
        conversation: list[TurnInput] = []
        for i in range(min(20, count - n)):
            text = " ".join(rng.sample(sentences, rng.randint(1, 3)))
            text = names.sub(lambda _, people=people: rng.choice(people), text)
            conversation.append(TurnInput(role=people[i % 2], text=text, at=at + 30 * i, source_id=f"pad:{n}"))
            n += 1
        out.append(conversation)
    return out


@dataclass
class Run:
    """Per-question outcomes of one method on one conversation."""

    hits: dict[int, list[bool]] = field(default_factory=lambda: {k: [] for k in KS})
    tokens: dict[int, list[int]] = field(default_factory=lambda: {k: [] for k in KS})
    budget_hits: list[bool] = field(default_factory=list)
    budget_tokens: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)

    def add(self, covered: list[set[str]], tokens: list[int], evidence: set[str], category: int, seconds: float) -> None:
        for k in KS:
            self.hits[k].append(any(c & evidence for c in covered[:k]))
            self.tokens[k].append(sum(tokens[:k]))
        used, hit = 0, False
        for c, t in zip(covered, tokens, strict=True):
            if used + t + OVERHEAD <= BUDGET:
                used += t + OVERHEAD
                hit = hit or bool(c & evidence)
        self.budget_hits.append(hit)
        self.budget_tokens.append(used)
        self.latency.append(seconds)
        self.categories.append(category)

    def merge(self, other: Run) -> Run:
        out = Run()
        for k in KS:
            out.hits[k] = self.hits[k] + other.hits[k]
            out.tokens[k] = self.tokens[k] + other.tokens[k]
        out.budget_hits = self.budget_hits + other.budget_hits
        out.budget_tokens = self.budget_tokens + other.budget_tokens
        out.latency = self.latency + other.latency
        out.categories = self.categories + other.categories
        return out

    def recall(self, k: int) -> float:
        return statistics.fmean(self.hits[k])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _row(name: str, run: Run) -> str:
    row = f"{name:<24}" + "".join(f"  {run.recall(k):.3f} {statistics.fmean(run.tokens[k]):>6.0f}" for k in KS)
    row += f"  {max(run.tokens[10]):>6}"
    row += f"  {statistics.fmean(run.budget_hits):.3f} {statistics.fmean(run.budget_tokens):>5.0f}"
    row += f"  {_pct(run.latency, 0.5) * 1000:6.1f} {_pct(run.latency, 0.99) * 1000:6.1f}"
    return row


def _header() -> str:
    cols = "".join(f"  R@{k:<4} tok@{k:<2}" for k in KS)
    return f"{'method':<24}{cols}  max@10  R≤{BUDGET}  tok  p50 ms p99 ms"


async def _run(args: argparse.Namespace) -> None:
    data = Path(args.data) if args.data else next((p for p in _DATA if p.is_file()), _DATA[0])
    conversations = load_conversations(data)
    embedder = OnnxEmbedder(DEFAULT_MODEL_DIR, int8=args.int8, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="lumina-memeval-") as tmp:
        t0 = time.perf_counter()
        pg = start_embedded_postgres(Path(args.db) if args.db else Path(tmp) / "pg", database="memeval")
        try:
            await upgrade_async(pg.url)
            print(f"embedded postgres ready and migrated in {time.perf_counter() - t0:.1f}s", flush=True)
            engine = create_engine(pg.url, pool_size=4)
            try:
                await _evaluate(conversations, engine, embedder, args)
            finally:
                await engine.dispose()
        finally:
            pg.stop()


def _weights(args: argparse.Namespace, rrf_k: int | None = None, recency: float | None = None) -> RankingWeights:
    return RankingWeights(
        rrf_k=rrf_k or args.rrf_k,
        graph=args.graph,
        recency=args.recency if recency is None else recency,
        importance=DEFAULT_WEIGHTS.importance,
        edge_kinds=DEFAULT_WEIGHTS.edge_kinds,
        depth=DEFAULT_WEIGHTS.depth,
        seeds=DEFAULT_WEIGHTS.seeds,
        mmr_lambda=args.mmr,
    )


async def _ask(search: SearchMemory, tenant: str, conv: dict[str, Any]) -> Run:
    run = Run()
    await search(tenant, USER, "warm up", k=5)
    for question, evidence, category in conv["questions"]:
        t = time.perf_counter()
        response = await search(tenant, USER, question, k=max(KS), token_budget=10**9)
        seconds = time.perf_counter() - t
        covered = [{r.source_id or "", *(c.source_id or "" for c in (*r.before, *r.after))} for r in response.results]
        run.add(covered, [approximate_tokens(r.passage) for r in response.results], evidence, category, seconds)
    return run


async def _dense(store: PgVectorStore, embedder: OnnxEmbedder, tenant: str, conv: dict[str, Any]) -> Run:
    run = Run()
    by_id = {f"{tenant}-{t.source_id}": t for t in conv["turns"]}
    for question, evidence, category in conv["questions"]:
        t = time.perf_counter()
        (vector,) = await embedder.embed([question])
        hits = await store.query(tenant, vector, max(KS), vector_filter(USER, None))
        seconds = time.perf_counter() - t
        turns = [by_id[h.id] for h in hits]
        texts = [f"{x.role}: {x.text}" for x in turns]
        run.add([{x.source_id or ""} for x in turns], [approximate_tokens(x) for x in texts], evidence, category, seconds)
    return run


def _marker(args: argparse.Namespace, tenant: str) -> Path | None:
    """With ``--db``: the file that says ``tenant`` was fully ingested with these settings."""
    if not args.db:
        return None
    return Path(args.db) / f"ingested-{tenant}-w{args.window}-{'int8' if args.int8 else 'fp32'}"


async def _ingest(
    ingest: IngestTurns, args: argparse.Namespace, tenant: str, conv: dict[str, Any], extra: list[list[TurnInput]]
) -> None:
    """The conversation's turns (in chunks of 64), then the distractor conversations; skipped when
    ``--db`` already holds them."""
    marker = _marker(args, tenant)
    if marker is not None and marker.exists():
        print(f"{tenant}: reusing the stored memories ({marker})", flush=True)
        return
    t0 = time.perf_counter()
    for start in range(0, len(conv["turns"]), 64):  # one call per chunk of turns
        await ingest(tenant, USER, conv["id"], conv["turns"][start : start + 64])
    for i, turns in enumerate(extra):
        await ingest(tenant, USER, f"pad-{i}", turns)
    print(
        f"{tenant}: ingested {len(conv['turns'])} turns + {sum(map(len, extra))} distractor turns "
        f"in {time.perf_counter() - t0:.1f}s (window {args.window})",
        flush=True,
    )
    if marker is not None:
        marker.write_text("done\n")


async def _evaluate(conversations: list[dict[str, Any]], engine: Any, embedder: OnnxEmbedder, args: argparse.Namespace) -> None:
    repo = PostgresMemoryRepository(engine, scoring=args.scoring, search_collection="memory", ef_search=args.ef_search)
    store = PgVectorStore(engine, ef_search=args.ef_search)
    one = None if args.separate or args.scoring != "bm25" else repo  # one statement for both retrievers
    turn_store = await PgVectorStore.open(engine, "memory_eval_turns")
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds(), window=args.window)
    hybrid: dict[str, Run] = {}
    dense: dict[str, Run] = {}
    padded: dict[str, Run] = {}
    tuned: dict[str, dict[tuple[int, float], Run]] = {}
    ablations: dict[str, dict[str, Run]] = {}
    with_facts: dict[str, Run] = {}
    for n, conv in enumerate(conversations):
        now = max(t.at for t in conv["turns"]) + 86400
        clock = FixedClock(now)

        def searcher(
            rrf_k: int | None = None, recency: float | None = None, clock: FixedClock = clock
        ) -> SearchMemory:
            return SearchMemory(
                repo, store, embedder, clock, weights=_weights(args, rrf_k, recency), candidates=args.candidates,
                window=args.window, hybrid=one,
            )

        # The padded store is a tenant of its own (the conversation plus distractors), so that one
        # kept database (--db) serves both measurements.
        tenant = f"locomo-{conv['id']}"
        if not args.padded_only:
            await _ingest(ingest, args, tenant, conv, [])
            texts = [f"{t.role}: {t.text}" for t in conv["turns"]]
            vectors = await embedder.embed(texts)
            await turn_store.upsert(
                tenant,
                [
                    VectorRecord(f"{tenant}-{t.source_id}", tenant, tuple(v), {"user_id": USER}, text)
                    for t, v, text in zip(conv["turns"], vectors, texts, strict=True)
                ],
            )
            hybrid[conv["id"]] = await _ask(searcher(), tenant, conv)
            dense[conv["id"]] = await _dense(turn_store, embedder, tenant, conv)
        if args.facts:  # a tenant of its own: the turns plus consolidation's facts as retrieval units
            with_facts[conv["id"]] = await _with_facts(engine, store, embedder, ingest, args, conv, searcher(), clock)
        if args.pad:
            tenant = f"locomo-{conv['id']}-pad{args.pad}"
            other = conversations[(n + 1) % len(conversations)]
            first = min(t.at for t in conv["turns"])
            extra = distractors(other, max(0, args.pad - len(conv["turns"])), first, now - 86400)
            await _ingest(ingest, args, tenant, conv, extra)
            padded[conv["id"]] = await _ask(searcher(), tenant, conv)
        # --tune and --ablations run on the padded store when there is one.
        if args.tune:
            tuned[conv["id"]] = {(k, r): await _ask(searcher(k, r), tenant, conv) for k, r in TUNE_GRID}
        if args.ablations:
            for name, search in _ablations(args, engine, store, embedder, clock).items():
                ablations.setdefault(name, {})[conv["id"]] = await _ask(search, tenant, conv)
    _report(conversations, hybrid, dense, padded, tuned, args)
    if with_facts:
        print(_header())
        for cid, run in with_facts.items():
            print(_row(f"  hybrid+facts {cid}", run))
        total = Run()
        for run in with_facts.values():
            total = total.merge(run)
        print(_row("hybrid + facts", total))
    if ablations:
        print(f"\nablations (same store{', padded' if args.pad else ''}, one change each):")
        print(_header())
        for name, runs in ablations.items():
            total = Run()
            for cid in (c["id"] for c in conversations):
                total = total.merge(runs[cid])
            print(_row(name, total))


async def _with_facts(
    engine: Any, store: PgVectorStore, embedder: OnnxEmbedder, ingest: IngestTurns, args: argparse.Namespace,
    conv: dict[str, Any], search: SearchMemory, clock: FixedClock,
) -> Run:
    """``--facts``: the conversation in a tenant of its own, consolidated for facts only (no merges,
    no summaries: ``ConsolidationPolicy`` with an unreachable threshold and summary size), then
    asked like the hybrid. A fact covers the turns it was derived from (the dataset README counts
    "a memory derived from" an evidence turn)."""
    from adapters.onnx import CachedEmbedder, MemoryEmbeddingCache
    from adapters.postgres.memory_store import PostgresMemoryStore
    from application.memory.consolidate import ConsolidateMemory, ConsolidationPolicy

    tenant = f"locomo-{conv['id']}-facts"
    await _ingest(ingest, args, tenant, conv, [])
    facts_store = PostgresMemoryStore(engine)
    policy = ConsolidationPolicy(duplicate_threshold=1.0, summary_min_turns=10**6)
    consolidate = ConsolidateMemory(
        facts_store, store, CachedEmbedder(embedder, MemoryEmbeddingCache(20_000)), TimeOrderedIds(), clock, policy=policy,
        reindex=ingest.reindex,
    )
    t0 = time.perf_counter()
    report = await consolidate(tenant, USER)
    fact_ids = [o.memory_id for o in report.outcomes if o.kind == "fact" and o.op in ("add", "update") and o.memory_id]
    edges = await facts_store.edges_touching(tenant, fact_ids, ["derived_from"])
    turns = {m.id: m.source_id or "" for m in await facts_store.get_many(tenant, {e.target for e in edges})}
    derived: dict[str, set[str]] = {}
    for e in edges:
        derived.setdefault(e.source, set()).add(turns.get(e.target, ""))
    print(f"{tenant}: {len(fact_ids)} facts from {report.turns} turns in {time.perf_counter() - t0:.1f}s", flush=True)
    run = Run()
    shown = 0
    for question, evidence, category in conv["questions"]:
        t = time.perf_counter()
        response = await search(tenant, USER, question, k=max(KS), token_budget=10**9)
        seconds = time.perf_counter() - t
        covered = [
            {x.source_id or "" for x in (r, *r.before, *r.after)} | {d for x in (r, *r.before, *r.after) for d in derived.get(x.id, ())}
            for r in response.results
        ]
        shown += sum(1 for r in response.results[:10] if r.id in derived)
        run.add(covered, [approximate_tokens(r.passage) for r in response.results], evidence, category, seconds)
    print(f"{tenant}: facts among the top 10 results: {shown} over {len(conv['questions'])} questions", flush=True)
    return run


def _ablations(
    args: argparse.Namespace, engine: Any, store: PgVectorStore, embedder: OnnxEmbedder, clock: FixedClock
) -> dict[str, SearchMemory]:
    """One setting changed at a time against the run's settings (same ingested store)."""

    def search(repo: PostgresMemoryRepository | None = None, one: bool = True, **changes: Any) -> SearchMemory:
        weights = msgspec.structs.replace(_weights(args), **changes)
        repo = repo or PostgresMemoryRepository(engine, scoring=args.scoring, search_collection="memory")
        return SearchMemory(
            repo, store, embedder, clock, weights=weights, candidates=args.candidates, window=args.window,
            hybrid=repo if one and args.scoring == "bm25" else None,
        )

    return {
        "full-text ts_rank": search(PostgresMemoryRepository(engine, scoring="ts_rank"), one=False),
        "BM25 no common cut": search(PostgresMemoryRepository(engine, cutoff=1.0, search_collection="memory")),
        "HNSW ef_search = k": search(PostgresMemoryRepository(engine, search_collection="memory", ef_per_result=1)),
        "no MMR (lambda 1)": search(mmr_lambda=1.0),
        "no recency/importance": search(recency=0.0, importance=0.0),
        "+ follows graph 0.3": search(graph=0.3),
    }


def _report(
    conversations: list[dict[str, Any]],
    hybrid: dict[str, Run],
    dense: dict[str, Run],
    padded: dict[str, Run],
    tuned: dict[str, dict[tuple[int, float], Run]],
    args: argparse.Namespace,
) -> None:
    ids = [c["id"] for c in conversations]

    def total(runs: dict[str, Run]) -> Run:
        out = Run()
        for cid in ids:
            out = out.merge(runs[cid])
        return out

    questions = sum(len(c["questions"]) for c in conversations)
    settings = (
        f"window {args.window}, scoring {args.scoring}, rrf k {args.rrf_k}, graph {args.graph}, "
        f"recency {args.recency}, mmr {args.mmr}, candidates {args.candidates}, ef_search {args.ef_search}, "
        f"embedder {'int8' if args.int8 else 'fp32'}, {'separate reads' if args.separate else 'one statement'}"
    )
    print(f"\n{questions} questions (categories 1-4 with evidence), {len(ids)} conversations; {settings}")
    print("tokens: whitespace approximation, ceil(words * 4 / 3), of what the results show")
    print(_header())
    if hybrid:
        print(_row("hybrid", total(hybrid)))
        for cid in ids:
            print(_row(f"  hybrid {cid}", hybrid[cid]))
        print(_row("dense (single turns)", total(dense)))
        for cid in ids:
            print(_row(f"  dense {cid}", dense[cid]))
    if padded:
        print(_row(f"hybrid, padded {args.pad}", total(padded)))
        for cid in ids:
            print(_row(f"  padded {cid}", padded[cid]))
    run = total(hybrid or padded)
    by_category: dict[int, list[bool]] = {}
    for category, hit in zip(run.categories, run.hits[10], strict=True):
        by_category.setdefault(category, []).append(hit)
    print(f"{'hybrid' if hybrid else 'padded'} recall@10 by category: " + ", ".join(
        f"{c}: {statistics.fmean(v):.3f} (n={len(v)})" for c, v in sorted(by_category.items())
    ))
    if tuned:
        where = " (padded store)" if args.pad else ""
        print(f"\nheld-out RRF k and recency weight{where} (chosen by recall@10 on one conversation, "
              "ties to the product defaults k=60, recency=0.2; reported on the other):")
        for dev in ids:
            grid = ", ".join(f"{k}/{r}: {run.recall(10):.3f}" for (k, r), run in tuned[dev].items())
            print(f"  on {dev}, R@10 by k/recency: {grid}")
            best = max(TUNE_GRID, key=lambda p: (tuned[dev][p].recall(10), -abs(p[0] - 60), -abs(p[1] - 0.2)))
            for test in (i for i in ids if i != dev):
                held, default = tuned[test][best], tuned[test][(60, 0.2)]
                print(f"  tune on {dev} -> k={best[0]}, recency={best[1]}; on {test}: "
                      f"R@5 {held.recall(5):.3f} R@10 {held.recall(10):.3f} R@20 {held.recall(20):.3f} "
                      f"(defaults: R@10 {default.recall(10):.3f})")
            both = total({cid: tuned[cid][best] for cid in ids})
            print(f"    k={best[0]}, recency={best[1]} on both: R@5 {both.recall(5):.3f} R@10 {both.recall(10):.3f} "
                  f"R@20 {both.recall(20):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="the int8-quantised embedder")
    parser.add_argument("--candidates", type=int, default=50, help="depth of each retrieval list")
    parser.add_argument("--window", type=int, default=1, help="context window (turns each side; 0: single turns)")
    parser.add_argument("--scoring", choices=("bm25", "ts_rank"), default="bm25", help="full-text ranking")
    parser.add_argument("--rrf-k", type=int, default=DEFAULT_WEIGHTS.rrf_k)
    parser.add_argument("--graph", type=float, default=DEFAULT_WEIGHTS.graph, help="weight of follows-graph expansion")
    parser.add_argument("--recency", type=float, default=DEFAULT_WEIGHTS.recency)
    parser.add_argument("--mmr", type=float, default=DEFAULT_WEIGHTS.mmr_lambda, help="MMR lambda (1: no MMR)")
    parser.add_argument("--pad", type=int, default=0, help="pad each user to this many memories with distractors")
    parser.add_argument("--separate", action="store_true",
                        help="full-text, vector and neighbour reads as separate calls (the path before the one-statement hybrid)")
    parser.add_argument("--ef-search", type=int, default=40, help="HNSW ef_search (at least the list depth)")
    parser.add_argument("--db", default=None, help="keep the database in this directory and reuse what it holds")
    parser.add_argument("--padded-only", action="store_true", help="with --pad: skip the unpadded measurements")
    parser.add_argument("--tune", action="store_true", help="held-out choice of the RRF k")
    parser.add_argument("--ablations", action="store_true", help="one setting changed at a time, same store")
    parser.add_argument("--facts", action="store_true", help="also: consolidation's extracted facts as retrieval units")
    from adapters.embedded.postgres import EmbeddedPostgresError

    try:
        asyncio.run(_run(parser.parse_args()))
    except EmbeddedPostgresError as exc:  # e.g. --db naming a directory that is not a database's
        raise SystemExit(f"memory_eval: {exc}") from None


if __name__ == "__main__":
    main()
