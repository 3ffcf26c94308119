"""Named model and run presets for the lab."""

from __future__ import annotations

from metareason.model import ModelConfig
from metareason.tokenize.lab import LAB_VOCAB

__all__ = ["MODEL_PRESETS", "model_preset"]

MODEL_PRESETS = {
    # ~0.1 M parameters: tests and smoke runs
    "lab-tiny": ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=64, intermediate_size=192,
                            num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=1024,
                            initializer_range=0.05),
    # ~1.2 M parameters: the default lab model (trains in minutes on 2 CPU cores)
    "lab-small": ModelConfig(family="qwen2", vocab_size=LAB_VOCAB.size, hidden_size=128, intermediate_size=384,
                             num_layers=6, num_heads=4, num_kv_heads=2, max_position_embeddings=1024,
                             initializer_range=0.05),
}


def model_preset(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r} (known: {', '.join(MODEL_PRESETS)})")
    return MODEL_PRESETS[name]
