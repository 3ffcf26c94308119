"""Jit-compiled batched decoding with the KV cache (temperature, top-k, top-p, stop tokens, budgets).

    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256, stop_tokens=(eos,))
    out = generate(params, prompts, prompt_lengths, config=config, sampling=sampling,
                   key=jax.random.key(0))          # out.tokens: int32[B, 256], out.lengths: int32[B]

Budget forcing (cut the thinking at a token budget, then force the answer template):

    out = generate(..., forcing=Forcing(end_think=eot, tokens=(eot, *template)), think_budgets=budgets)

Imports only jax/numpy and `metareason.model` (no tensorflow-datasets, grain, torch).
"""

from metareason.sample.config import Forcing, SamplingConfig, SamplingError
from metareason.sample.filters import process_logits, sample_token, top_k_filter, top_p_filter
from metareason.sample.decode import SampleOutput, generate
from metareason.sample.batched import generate_all, round_up

__all__ = ["SamplingConfig", "SamplingError", "Forcing", "SampleOutput", "generate", "generate_all", "round_up",
           "top_k_filter", "top_p_filter", "process_logits", "sample_token"]
