"""Named model configs for the lab (`model_preset("lab-tiny")`): architectures, not runs (the run
presets of `metareason train` / `metareason rl` are `metareason.train.presets`)."""

from __future__ import annotations

from metareason.model.config import ModelConfig
from metareason.tokenize.lab import LAB_VOCAB

__all__ = ["MODEL_PRESETS", "model_preset"]

MODEL_PRESETS = {
    # ~0.1 M parameters: tests and smoke runs
    "lab-tiny": ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=64, intermediate_size=192,
                            num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=1024,
                            initializer_range=0.05, scan_unroll=2),
    # ~0.7 M parameters, 3 layers: the arith presets' model (about 230 ms per 8 x 256 step on 2 CPU
    # cores, so twice the steps of lab-small in the same 10 minutes; more accurate at that budget)
    "lab-fast": ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=128, intermediate_size=384,
                            num_layers=3, num_heads=4, num_kv_heads=2, max_position_embeddings=1024,
                            initializer_range=0.05, scan_unroll=3),
    # ~1.2 M parameters, 6 layers
    "lab-small": ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=128, intermediate_size=384,
                             num_layers=6, num_heads=4, num_kv_heads=2, max_position_embeddings=1024,
                             initializer_range=0.05, scan_unroll=6),
}


def model_preset(name: str) -> ModelConfig:
    """The `ModelConfig` named `name` (one of `MODEL_PRESETS`)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r} (known: {', '.join(MODEL_PRESETS)})")
    return MODEL_PRESETS[name]
