"""Consolidation cost and yield on the LoCoMo dev slice.

    .venv/bin/python -m tools.bench.memory_consolidation [--int8] [--threads 2]

Starts an embedded PostgreSQL 18 + pgvector in a temporary directory, migrates it to head and,
for each conversation (one tenant each), ingests it session by session the way the worker does
(``IngestTurns``, then ``ConsolidateMemory`` after each session; a session is a conversation id),
then runs one sweep with decay. Prints per conversation: turns, ingest and consolidation wall time
(total and per turn, and their ratio), what consolidation did (turns merged, facts added /
superseded / retracted, NOOPs, summaries added / updated) and the sweep's time.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from adapters.embedded.postgres import start_embedded_postgres
from adapters.onnx.embedder import DEFAULT_MODEL_DIR, OnnxEmbedder
from adapters.postgres.engine import create_engine
from adapters.postgres.migrate import upgrade_async
from adapters.system import SystemClock, TimeOrderedIds
from api.memory import open_memory
from api.settings import load_settings
from application.memory import TurnInput
from tools.bench.memory_eval import _DATA, load_conversations

USER = "bench"


def _sessions(turns: list[TurnInput]) -> list[list[TurnInput]]:
    """LoCoMo's sessions: turns 30 s apart belong together; a larger gap starts a new session."""
    out: list[list[TurnInput]] = []
    for turn in turns:
        if out and turn.at - out[-1][-1].at <= 60:
            out[-1].append(turn)
        else:
            out.append([turn])
    return out


async def _run(args: argparse.Namespace) -> None:
    data = Path(args.data) if args.data else next((p for p in _DATA if p.is_file()), _DATA[0])
    conversations = load_conversations(data)
    embedder = OnnxEmbedder(DEFAULT_MODEL_DIR, int8=args.int8, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="lumina-memcons-") as tmp:
        pg = start_embedded_postgres(Path(tmp) / "pg", database="memcons")
        try:
            await upgrade_async(pg.url)
            engine = create_engine(pg.url, pool_size=4)
            try:
                memory = await open_memory(
                    load_settings({}, database_url=pg.url), engine, embedder, clock=SystemClock(), ids=TimeOrderedIds()
                )
                print(f"model {memory.embedder.model}, collection {memory.collection}")
                print(
                    f"{'conversation':<10} {'turns':>5} {'sessions':>8} {'ingest s':>8} {'consol s':>8} "
                    f"{'ms/turn in':>10} {'ms/turn co':>10} {'co/in':>6}  outcomes"
                )
                for conv in conversations:
                    tenant = f"bench-{conv['id']}"
                    sessions = _sessions(conv["turns"])
                    ingest_s = consolidate_s = 0.0
                    outcomes: Counter[str] = Counter()
                    for i, session in enumerate(sessions):
                        t0 = time.perf_counter()
                        await memory.ingest(tenant, USER, f"session-{i + 1}", session)
                        t1 = time.perf_counter()
                        report = await memory.consolidate(tenant, USER)
                        t2 = time.perf_counter()
                        ingest_s += t1 - t0
                        consolidate_s += t2 - t1
                        outcomes.update(f"{o.op} {o.kind}" for o in report.outcomes)
                    n = len(conv["turns"])
                    shown = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                    print(
                        f"{conv['id']:<10} {n:>5} {len(sessions):>8} {ingest_s:>8.1f} {consolidate_s:>8.1f} "
                        f"{1000 * ingest_s / n:>10.1f} {1000 * consolidate_s / n:>10.1f} "
                        f"{consolidate_s / ingest_s:>6.2f}  {shown}",
                        flush=True,
                    )
                    t0 = time.perf_counter()
                    swept = await memory.consolidate(tenant, USER, decay=True)
                    print(f"{'':<10} sweep with decay: {swept.decayed} memories decayed in {time.perf_counter() - t0:.2f}s")
                    facts = await memory.use.export(tenant, USER, "", 500)
                    current = [v for v in facts.memories if v.kind == "fact" and v.valid_to is None]
                    for view in current[: args.show]:
                        print(f"{'':<10} fact: {view.memory.text}")
                await memory.aclose()
            finally:
                await engine.dispose()
        finally:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="locomo-dev.json (default: ../shared/data/locomo/locomo-dev.json)")
    parser.add_argument("--int8", action="store_true", help="the int8 model")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--show", type=int, default=5, help="current facts to print per conversation")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
