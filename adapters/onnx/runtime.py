"""The sentence encoder itself: a tokenizer, an onnxruntime session, mean pooling, L2 norm.

Synchronous and dependency-light on purpose (stdlib, numpy, onnxruntime, tokenizers; never torch):
``tools/build_embedder.py`` loads this very file to check the exported model against PyTorch, so
what the build verifies is what runs. ``embedder.py`` wraps it in the async ``Embedder`` port.

The model directory is the build's output (``make install`` → ``build/models/all-MiniLM-L6-v2``):
``model.onnx``, ``model-int8.onnx``, ``tokenizer.json`` and ``embedder.json`` (name, dimensions,
maximum sequence length).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

__all__ = ["MANIFEST", "MODEL_FILES", "ModelFilesMissing", "SentenceEncoder", "model_files"]

MANIFEST = "embedder.json"
FP32, INT8 = "model.onnx", "model-int8.onnx"
MODEL_FILES = (FP32, INT8, "tokenizer.json", MANIFEST)


class ModelFilesMissing(FileNotFoundError):
    """The embedding model has not been built into ``model_dir``."""


def model_files(model_dir: Path, *, int8: bool) -> tuple[Path, Path, dict[str, object]]:
    """(onnx path, tokenizer path, manifest) in ``model_dir``; ModelFilesMissing names what is absent."""
    onnx_path = model_dir / (INT8 if int8 else FP32)
    needed = (onnx_path, model_dir / "tokenizer.json", model_dir / MANIFEST)
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ModelFilesMissing(
            f"embedding model files missing in {model_dir}: {', '.join(missing)} "
            "(run `make install` to build them)"
        )
    manifest = json.loads((model_dir / MANIFEST).read_text())
    return onnx_path, needed[1], manifest


class SentenceEncoder:
    """``encode(texts)`` → float32 array (len(texts), dimensions) of unit vectors, one call = one
    inference. Thread-safe (onnxruntime sessions and tokenizers may be shared across threads)."""

    def __init__(self, model_dir: Path, *, int8: bool = False, threads: int | None = None) -> None:
        onnx_path, tokenizer_path, manifest = model_files(model_dir, int8=int8)
        self.name = str(manifest["name"]) + ("-int8" if int8 else "")
        self.dimensions = int(manifest["dimensions"])  # type: ignore[call-overload]
        self.max_tokens = int(manifest["max_seq_length"])  # type: ignore[call-overload]
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer.no_padding()  # tokenizer.json pads to 128; ``run`` pads each batch itself
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: on 2 cores shared with the rest of the
        # platform, spinning threads steal the core the other one needs (docs/embeddings.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Token ids of each text, truncated to ``max_tokens``, unpadded (``len(e.ids)`` is its
        cost: callers sort by it so that each batch pads little)."""
        return self._tokenizer.encode_batch(list(texts))

    def run(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """One inference over ``tokenize``'s output, padded to the longest of them."""
        longest = max((len(e.ids) for e in encodings), default=0)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feed)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``run(tokenize(texts))``: one inference over ``texts``."""
        return self.run(self.tokenize(texts))
