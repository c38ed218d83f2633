"""Fact extraction on LoCoMo: how many facts consolidation's extractor finds per conversation (by
kind), how they line up with the dataset's own per-session observations, and a spot-check sample.

    .venv/bin/python -m tools.bench.memory_facts [--data PATH] [--sample 20] [--seed 1]

Runs ``application.memory.extract.RuleFactExtractor`` (the no-provider extractor: relations plus
``domain.memory.dialogue``) over every turn, each turn dated by its session's date as the
evaluation ingests it (``tools.bench.memory_eval.load_conversations``), and prints:

- facts per conversation, by kind, and the distinct facts after merging restatements (one per
  subject + predicate + object, as consolidation keeps them);
- against LoCoMo's ``observation`` annotations (written by the dataset's authors per session and
  speaker, each citing its turn): *turn recall* — the share of annotated turns where the extractor
  found at least one fact — and *turn agreement* — the share of extracted facts whose turn is
  annotated. Neither is precision (an annotation is a paraphrase, not a triple); they bound it;
- ``--sample`` random facts (fixed ``--seed``) with their source turns, for a by-hand precision
  check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter
from pathlib import Path

from application.memory.extract import RuleFactExtractor
from application.memory.ports import StoredMemory
from domain.memory.tiers import Tier, fact_key, normalize_term
from tools.bench.memory_eval import _DATA, load_conversations


def _annotated(path: Path) -> dict[str, set[str]]:
    """Conversation id -> the dia_ids its observation annotations cite."""
    out: dict[str, set[str]] = {}
    for sample in json.loads(path.read_text()):
        cited: set[str] = set()
        for session in sample.get("observation", {}).values():
            for items in session.values():
                for item in items:
                    refs = item[1] if isinstance(item[1], list) else [item[1]]
                    cited.update(str(r).strip() for r in refs)
        out[sample["sample_id"]] = cited
    return out


async def _run(args: argparse.Namespace) -> None:
    data = Path(args.data) if args.data else next((p for p in _DATA if p.is_file()), _DATA[0])
    conversations = load_conversations(data)
    annotated = _annotated(data)
    extractor = RuleFactExtractor()
    rows: list[tuple[str, str, str, object]] = []
    print(f"{'conversation':<14}{'turns':>6}{'facts':>7}{'distinct':>9}  by kind; turn recall / agreement vs annotations")
    for conv in conversations:
        turns = [
            StoredMemory(f"t{i}", "t", "u", conv["id"], Tier.EPISODIC, f"{t.role}: {t.text}", t.at, role=t.role, source_id=t.source_id)
            for i, t in enumerate(conv["turns"])
        ]
        found = await extractor.extract(turns)
        facts = [(turn.source_id or "", turn.text, s) for turn, statements in zip(turns, found, strict=True) for s in statements]
        kinds = Counter(s.kind for _, _, s in facts)
        distinct = {(*fact_key(s.subject, s.predicate), normalize_term(s.object), s.retraction) for _, _, s in facts}
        gold = annotated.get(conv["id"], set())
        with_facts = {dia for dia, _, _ in facts}
        recall = len(gold & with_facts) / len(gold) if gold else float("nan")
        agreement = sum(1 for dia, _, _ in facts if dia in gold) / len(facts) if facts else float("nan")
        print(
            f"{conv['id']:<14}{len(turns):>6}{len(facts):>7}{len(distinct):>9}  {dict(sorted(kinds.items()))}; "
            f"{recall:.2f} of {len(gold)} annotated turns / {agreement:.2f}"
        )
        rows += [(conv["id"], dia, text, s) for dia, text, s in facts]
    rng = random.Random(args.seed)
    print(f"\n{args.sample} random facts (seed {args.seed}):")
    for conv_id, dia, text, s in rng.sample(rows, min(args.sample, len(rows))):
        print(f"- [{s.kind}] {s.text}\n    <- {conv_id} {dia}: {text[:200]}")  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
