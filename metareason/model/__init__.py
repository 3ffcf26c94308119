"""The decoder-only transformer (Qwen2/Qwen2.5, Llama 3, Qwen3) as pure functions over a params pytree.

    config = ModelConfig(family="qwen2", vocab_size=..., ...)   # or ModelConfig.from_hf_config(json)
    params = init(config, jax.random.key(0))                      # or load_hf_checkpoint(path)
    out = apply(params, tokens, config=config)                    # out.logits: float32[B, S, V]

Every array dimension has a logical axis name (`metareason.model.axes`; the params' in
`param_axes(config)`), which `metareason.parallel` maps onto a device mesh.
"""

from metareason.model.adapters import AdapterError, from_linen, from_nnx
from metareason.model.cache import KVCache, init_cache
from metareason.model.config import ATTENTION_IMPLS, FAMILIES, REMAT_POLICIES, ConfigError, ModelConfig, RopeScaling
from metareason.model.hf import (CheckpointError, hf_state_dict, hf_tensor_names, load_hf_checkpoint, load_hf_config,
                                 save_hf_checkpoint)
from metareason.model.params import (ParamsError, axis_sizes, check_params, flatten, init, param_axes, param_shapes,
                                     split_layers, stack_layers, unflatten)
from metareason.model.protocol import CausalLM, as_causal_lm, causal_mask
from metareason.model.transformer import (InputError, ModelOutput, apply, hidden_states, output_logits,
                                         prefill_causal, rms_norm, segment_positions)

__all__ = [
    "ModelConfig", "RopeScaling", "ConfigError", "FAMILIES", "REMAT_POLICIES", "ATTENTION_IMPLS",
    "init", "param_shapes", "param_axes", "axis_sizes", "check_params", "ParamsError", "flatten", "unflatten",
    "split_layers", "stack_layers",
    "apply", "hidden_states", "output_logits", "prefill_causal", "ModelOutput", "InputError", "segment_positions", "rms_norm",
    "KVCache", "init_cache",
    "load_hf_checkpoint", "load_hf_config", "save_hf_checkpoint", "hf_tensor_names", "hf_state_dict", "CheckpointError",
    "CausalLM", "as_causal_lm", "causal_mask", "from_linen", "from_nnx", "AdapterError",
]
