"""One config dataclass for the Qwen2/Qwen2.5, Llama 3 and Qwen3 decoder families.

`ModelConfig` is frozen and hashable, so it can be a static argument of `jax.jit`.
`ModelConfig.from_hf_config` reads a Hugging Face `config.json` dict (the transformers v4
layout with `rope_theta` / `rope_scaling` and the v5 layout with `rope_parameters`) and
rejects anything the implementation would silently get wrong; `to_hf_config` writes the
v5 layout that `transformers` loads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from metareason.errors import ConfigError  # the library's one (also out-of-range flags)

__all__ = ["ModelConfig", "RopeScaling", "ConfigError", "FAMILIES", "REMAT_POLICIES", "ATTENTION_IMPLS"]

#: Supported `model_type`s and the `architectures` entry each one writes.
FAMILIES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}

#: Rematerialisation policies for the scanned layer body (see `metareason.model.transformer`).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")

#: Attention kernels: "xla" (einsum + float32 softmax, any mask), "chunked" (the same in query
#: blocks), "cudnn" (GPU fused kernel), "pallas" (flash attention with mask block skipping,
#: `metareason.model.attention`), "splash" (JAX's TPU splash attention) and "auto": cuDNN for
#: causal bf16/fp16 and "pallas" for masks on a GPU, "splash" on a TPU, "xla" on the CPU.
ATTENTION_IMPLS = ("xla", "chunked", "cudnn", "pallas", "splash", "auto")

_DTYPES = ("float32", "bfloat16", "float16", "float64")

# HF config fields that carry no information this implementation needs (bookkeeping,
# generation defaults, training-only switches whose value cannot change the forward pass).
_IGNORED_HF_FIELDS = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "attention_dropout",
    "initializer_range", "max_window_layers", "return_dict", "output_attentions",
    "output_hidden_states", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
    "is_encoder_decoder", "tokenizer_class", "pretraining_tp", "torchscript", "use_return_dict",
    "tie_encoder_decoder", "pruned_heads", "finetuning_task", "task_specific_params",
    "cross_attention_hidden_size", "add_cross_attention", "is_decoder", "quantization_config_",
})


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `kind` is "linear" (divide all frequencies by `factor`) or
    "llama3" (Llama 3.1's piecewise scaling of the low frequencies)."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.kind not in ("linear", "llama3"):
            raise ConfigError(f"unsupported rope scaling type {self.kind!r} (supported: 'linear', 'llama3')")
        if not self.factor > 0:
            raise ConfigError(f"rope scaling factor must be positive, got {self.factor}")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError("rope scaling: high_freq_factor must exceed low_freq_factor")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a decoder-only transformer.

    Shapes named in docstrings across the package: V = vocab_size, D = hidden_size,
    F = intermediate_size, L = num_layers, H = num_heads, K = num_kv_heads (GQA groups),
    Dh = head_dim, G = H // K.
    """

    family: str = "qwen2"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int | None = None  # default hidden_size // num_heads
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # llama / qwen3: bias on q, k, v and o; qwen2 always has q/k/v bias
    initializer_range: float = 0.02
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: str = "none"
    # "xla" (any mask, exact softmax), "chunked" (the same in query blocks of attention_chunk,
    # each recomputed in the backward pass: memory O(chunk x T), not O(S x T); any backend) or
    # "cudnn" (fused kernel, GPU), "pallas" / "splash" (fused, any mask; see ATTENTION_IMPLS) or
    # "auto" (per backend; "xla" on the CPU). The default stays "xla": the same numbers everywhere.
    attention_impl: str = "xla"
    attention_chunk: int = 512
    # the training losses' logits, this many tokens at a time, each block recomputed in the
    # backward pass (memory O(chunk x V), not O(S x V)); 0: all at once
    loss_chunk: int = 0
    # layers per iteration of the layer scan (no cache); num_layers unrolls it fully, which saves
    # the stacked residual buffers of the backward pass (faster for small models, longer compiles)
    scan_unroll: int = 1

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"unsupported model family {self.family!r} (supported: {', '.join(FAMILIES)})")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "max_position_embeddings", "scan_unroll", "attention_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name} must be a positive int, got {value!r}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"config field {name} must be a finite number > 0, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; set head_dim")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ConfigError(f"head_dim must be a positive even int (RoPE rotates pairs), got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ConfigError(f"config field {name} must be one of {_DTYPES}, got {getattr(self, name)!r}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"config field remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if not isinstance(self.loss_chunk, int) or self.loss_chunk < 0:
            raise ConfigError(f"config field loss_chunk must be an int >= 0, got {self.loss_chunk!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"config field attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if isinstance(self.rope_scaling, Mapping):  # convenience: accept a dict
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))

    # -- derived -----------------------------------------------------------------------------
    @property
    def qkv_bias(self) -> bool:
        return self.family == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.family != "qwen2" and self.attention_bias

    @property
    def qk_norm(self) -> bool:
        return self.family == "qwen3"

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # the fields that say how to compute, not what the model is (`with_overrides` may set them)
    NUMERICS = ("param_dtype", "compute_dtype", "remat", "attention_impl", "attention_chunk", "loss_chunk",
                "scan_unroll")

    @classmethod
    def parse_overrides(cls, text: str) -> dict[str, Any]:
        """{field: value} from "name=value,name=value" (e.g.
        "compute_dtype=bfloat16,remat=full,attention_impl=chunked,loss_chunk=1024"), checked
        before any weights are read: only `NUMERICS` fields, ints where the field is an int, and
        values the config accepts. "" gives {}."""
        changes: dict[str, Any] = {}
        base = cls()
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = (x.strip() for x in item.partition("="))
            if not sep or name not in cls.NUMERICS:
                raise ConfigError(f"model override {item!r}: expected NAME=VALUE with NAME one of {', '.join(cls.NUMERICS)}")
            try:
                changes[name] = int(value) if isinstance(getattr(base, name), int) else value
            except ValueError:
                raise ConfigError(f"model override {item!r}: {name} takes an int") from None
        base.replace(**changes)  # raises ConfigError naming a bad value
        return changes

    def with_overrides(self, text: str) -> "ModelConfig":
        """This config with numerics fields set from "name=value,..." (`parse_overrides`); ""
        changes nothing. Only `NUMERICS` fields may be set: the architecture comes with the weights."""
        changes = self.parse_overrides(text)
        return self.replace(**changes) if changes else self

    def num_params(self) -> int:
        """Parameter count (embeddings included; the output head counted once if tied)."""
        D, F, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        H, K, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        per_layer = D * Dh * (H + 2 * K) + H * Dh * D + 3 * D * F + 2 * D
        per_layer += (H + 2 * K) * Dh if self.qkv_bias else 0
        per_layer += D if self.o_bias else 0
        per_layer += 2 * Dh if self.qk_norm else 0
        return L * per_layer + V * D * (1 if self.tie_word_embeddings else 2) + D

    # -- Hugging Face ------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], **overrides) -> "ModelConfig":
        """Builds a config from a Hugging Face `config.json` dict.

        Raises `ConfigError` naming the field for an unsupported architecture, an unknown
        field, or a supported field with a value this implementation does not reproduce.
        `overrides` (e.g. `param_dtype="bfloat16"`, `remat="full"`) set our own fields.
        """
        if not isinstance(hf, Mapping):
            raise ConfigError(f"config.json must hold a JSON object of fields, got {type(hf).__name__}")
        hf = dict(hf)
        model_type = hf.pop("model_type", None)
        if model_type not in FAMILIES:
            archs = hf.get("architectures")
            raise ConfigError(f"unsupported architecture: model_type {model_type!r} (architectures {archs}); "
                              f"supported model types: {', '.join(FAMILIES)}")
        archs = hf.get("architectures") or [FAMILIES[model_type]]
        if any(a != FAMILIES[model_type] for a in archs):
            raise ConfigError(f"unsupported architecture {archs} for model_type {model_type!r} "
                              f"(supported: {FAMILIES[model_type]})")

        def take(name, default=None):
            return hf.pop(name, default)

        if take("hidden_act", "silu") != "silu":
            raise ConfigError("unsupported config field hidden_act: only 'silu' (SwiGLU) is implemented")
        if take("mlp_bias", False):
            raise ConfigError("unsupported config field mlp_bias=True")
        if take("use_sliding_window", False):
            raise ConfigError("unsupported config field use_sliding_window=True (only full attention is implemented)")
        take("sliding_window")
        layer_types = take("layer_types")
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            raise ConfigError(f"unsupported config field layer_types={sorted(set(layer_types))} (only full_attention)")
        if take("quantization_config") is not None:
            raise ConfigError("unsupported config field quantization_config (quantized checkpoints)")

        rope_theta, rope_scaling = _parse_rope(take("rope_parameters"), take("rope_theta"), take("rope_scaling"))
        num_heads = take("num_attention_heads")
        fields = dict(
            family=model_type,
            vocab_size=take("vocab_size"),
            hidden_size=take("hidden_size"),
            intermediate_size=take("intermediate_size"),
            num_layers=take("num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=take("num_key_value_heads", None) or num_heads,
            head_dim=take("head_dim", None),
            max_position_embeddings=take("max_position_embeddings", 4096),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            rms_norm_eps=take("rms_norm_eps", 1e-6),
            tie_word_embeddings=take("tie_word_embeddings", False),
            attention_bias=take("attention_bias", False),
            initializer_range=hf.get("initializer_range", 0.02),
        )
        missing = [k for k, v in fields.items() if v is None and k not in ("head_dim", "rope_scaling")]
        if missing:
            raise ConfigError(f"config.json lacks required field(s): {', '.join(missing)}")
        unknown = sorted(k for k in hf if k not in _IGNORED_HF_FIELDS)
        if unknown:
            raise ConfigError(f"unsupported config field {unknown[0]!r} (model_type {model_type!r})"
                              + (f" and {len(unknown) - 1} more: {unknown[1:]}" if len(unknown) > 1 else ""))
        fields.update(overrides)
        return cls(**fields)

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` dict that `transformers` (v5 layout) loads as this architecture."""
        rope: dict[str, Any] = {"rope_theta": float(self.rope_theta), "rope_type": "default"}
        if self.rope_scaling is not None:
            rope["rope_type"] = self.rope_scaling.kind
            rope["factor"] = float(self.rope_scaling.factor)
            if self.rope_scaling.kind == "llama3":
                rope.update(low_freq_factor=float(self.rope_scaling.low_freq_factor),
                            high_freq_factor=float(self.rope_scaling.high_freq_factor),
                            original_max_position_embeddings=int(self.rope_scaling.original_max_position_embeddings))
        out = {
            "architectures": [FAMILIES[self.family]],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "dtype": self.param_dtype,
        }
        if self.family != "qwen2":
            out["attention_bias"] = self.attention_bias
        if self.family == "llama":
            out["mlp_bias"] = False
        return out


def _parse_rope(rope_parameters, rope_theta, rope_scaling) -> tuple[float, RopeScaling | None]:
    """Reads RoPE settings from either the v5 `rope_parameters` or the v4 `rope_theta`/`rope_scaling`."""
    params = dict(rope_parameters or rope_scaling or {})
    theta = params.pop("rope_theta", None) or rope_theta or 10000.0
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    if kind == "default":
        extra = sorted(params)
        if extra:
            raise ConfigError(f"unsupported rope parameter {extra[0]!r} for rope_type 'default'")
        return float(theta), None
    if kind not in ("linear", "llama3"):
        raise ConfigError(f"unsupported config field rope_type={kind!r} (supported: default, linear, llama3)")
    known = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
    extra = sorted(set(params) - known)
    if extra:
        raise ConfigError(f"unsupported rope parameter {extra[0]!r} for rope_type {kind!r}")
    if "factor" not in params or not math.isfinite(float(params["factor"])):
        raise ConfigError(f"rope_type {kind!r} needs a finite 'factor'")
    return float(theta), RopeScaling(kind=kind, **params)
