"""Seed tiktoken's cache from bpe-openai's bundled BPE files, so token counting works offline.

    .venv/bin/python -m tools.seed_tiktoken [DIR]      # default: $TIKTOKEN_CACHE_DIR, else build/tiktoken

Run by the Makefile's ``.stamps/tiktoken``. Verifies the SHA-256 tiktoken expects, then loads each
encoding through tiktoken from DIR alone (no network) and counts a sample."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from adapters.tokens import DEFAULT_CACHE_DIR, ENCODINGS, cache_file, seed_cache


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(os.environ.get("TIKTOKEN_CACHE_DIR") or DEFAULT_CACHE_DIR)
    written = seed_cache(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    import tiktoken

    for name in ENCODINGS:
        count = len(tiktoken.get_encoding(name).encode_ordinary("Lumina routes every request."))
        state = "written" if cache_file(target, name) in written else "already there"
        print(f"tiktoken {name}: {cache_file(target, name)} ({state}; sample = {count} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
