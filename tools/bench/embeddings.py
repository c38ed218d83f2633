"""Local embedding throughput: sentences/s of ``OnnxEmbedder`` (fp32 and int8) on LoCoMo turns.

    .venv/bin/python -m tools.bench.embeddings [--threads 2] [--sentences 2000] [--batch-sizes 8,32,128] [--repeat 3]

Reads every turn of ``../shared/data/locomo/locomo-dev.json`` (falls back to
``/work/shared/data/locomo``), takes the first ``--sentences`` (cache off: every text goes through
the model), warms each configuration up once, then times one ``embed`` call over all of them (the
best of ``--repeat`` such calls).
onnxruntime uses ``--threads`` intra-op threads (2 = the target machine's cores). The last column
divides by the process's CPU time over ``--threads`` instead of wall time: the rate ``threads``
idle cores would give, for a machine shared with other work while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from adapters.onnx.embedder import DEFAULT_MODEL_DIR, OnnxEmbedder

__all__ = ["load_sentences", "main"]

_ROOT = Path(__file__).resolve().parents[2]
_DATA = (_ROOT.parent / "shared/data/locomo/locomo-dev.json", Path("/work/shared/data/locomo/locomo-dev.json"))


def load_sentences(path: Path | None = None) -> list[str]:
    """Every turn's text in LoCoMo order."""
    source = path or next((p for p in _DATA if p.is_file()), _DATA[0])
    sentences: list[str] = []
    for record in json.loads(source.read_text()):
        conversation = record["conversation"]
        for key in sorted((k for k in conversation if k.startswith("session_") and k[8:].isdigit()), key=lambda k: int(k[8:])):
            sentences.extend(turn["text"] for turn in conversation[key] if turn.get("text"))
    return sentences


async def _run(args: argparse.Namespace) -> None:
    sentences = load_sentences()[: args.sentences]
    words = sum(len(s.split()) for s in sentences) / len(sentences)
    print(f"{len(sentences)} LoCoMo turns (mean {words:.1f} words), {args.threads} onnxruntime threads")
    print(f"{'model':<8} {'batch':>5} {'sentences/s':>12} {'ms/sentence':>12} {'CPU-bound sentences/s':>22}")
    for int8 in (False, True):
        for batch_size in args.batch_sizes:
            embedder = OnnxEmbedder(args.model_dir, int8=int8, batch_size=batch_size, threads=args.threads)
            await embedder.embed(sentences[: batch_size * 2])  # warm-up: allocations, kernels
            elapsed = cpu = float("inf")
            for _ in range(args.repeat):  # best of N: a machine shared with other work is noisy
                started, cpu_started = time.perf_counter(), time.process_time()
                await embedder.embed(sentences)
                elapsed = min(elapsed, time.perf_counter() - started)
                cpu = min(cpu, time.process_time() - cpu_started)
            rate = len(sentences) / elapsed
            cpu_rate = len(sentences) / (cpu / args.threads)  # what `threads` idle cores would give
            print(
                f"{'int8' if int8 else 'fp32':<8} {batch_size:>5} {rate:>12,.0f} {1000 / rate:>12.2f} {cpu_rate:>22,.0f}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OnnxEmbedder throughput on LoCoMo turns")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per configuration; the best counts")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128]
    )
    asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
