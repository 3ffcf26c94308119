"""`metareason selfcheck`: the installation's end-to-end check on tiny random models.

For each family it builds a tiny random model, saves it in Hugging Face format, reloads it,
and verifies (1) the reload is bit-identical, (2) incremental decoding with the KV cache equals
the full pass, (3) when `transformers` is installed, that `transformers` loads the export and
gives the same logits. It writes the checkpoints and a JSON report under `out`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from metareason.model import (ModelConfig, RopeScaling, apply, init, init_cache, load_hf_checkpoint,
                              save_hf_checkpoint)

__all__ = ["SelfCheck", "run_selfcheck"]


@dataclasses.dataclass
class SelfCheck:
    """Build, save, reload and cross-check a tiny model of each family."""

    out: Path = Path("runs/selfcheck")
    """Directory for the exported checkpoints and report.json."""
    families: tuple[str, ...] = ("qwen2", "llama", "qwen3")
    """Model families to check."""
    seq_len: int = 24
    """Tokens per test sequence."""
    tolerance: float = 1e-4
    """Largest allowed max-abs logit difference (float32)."""
    seed: int = 0


def _tiny(family: str) -> ModelConfig:
    scaling = RopeScaling("llama3", factor=8.0, original_max_position_embeddings=16) if family == "llama" else None
    return ModelConfig(family=family, vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2,
                       num_heads=4, num_kv_heads=2, rope_scaling=scaling, tie_word_embeddings=family == "qwen3",
                       initializer_range=0.3)


def _transformers_logits(path: Path, tokens):
    """transformers' logits of `tokens` for the export in `path`, or None without torch / transformers
    (imported here: the reference frameworks stay out of the package's imports)."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def run_selfcheck(cfg: SelfCheck) -> dict:
    """Runs the check; returns the report and raises `SystemExit(1)` if anything disagrees."""
    out = cfg.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    report = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "families": {}}
    ok = True
    for family in tqdm(cfg.families, desc="selfcheck", unit="family"):
        t0 = time.perf_counter()
        config = _tiny(family)
        params = init(config, jax.random.key(cfg.seed))
        tokens = np.random.RandomState(cfg.seed).randint(0, config.vocab_size, (2, cfg.seq_len))
        path = save_hf_checkpoint(out / family, config, params, overwrite=True)
        config2, params2 = load_hf_checkpoint(path)
        reload_exact = config2 == config and all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)))
        full = np.asarray(apply(params2, tokens, config=config2).logits)
        cache = init_cache(config2, 2, cfg.seq_len)
        steps = []
        for i in range(cfg.seq_len):
            o = apply(params2, tokens[:, i:i + 1], config=config2, cache=cache)
            cache = o.cache
            steps.append(np.asarray(o.logits))
        cache_diff = float(np.abs(np.concatenate(steps, axis=1) - full).max())
        ref = _transformers_logits(path, tokens)
        hf_diff = None if ref is None else float(np.abs(ref - full).max())
        passed = reload_exact and cache_diff <= cfg.tolerance and (hf_diff is None or hf_diff <= cfg.tolerance)
        ok &= passed
        report["families"][family] = {
            "checkpoint": str(path), "params": config.num_params(), "reload_bit_exact": reload_exact,
            "cache_vs_full_max_abs": cache_diff, "transformers_vs_ours_max_abs": hf_diff,
            "passed": passed, "seconds": round(time.perf_counter() - t0, 2)}
    report["passed"] = ok
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for family, r in report["families"].items():
        hf = "transformers not installed" if r["transformers_vs_ours_max_abs"] is None else \
            f"vs transformers {r['transformers_vs_ours_max_abs']:.2e}"
        print(f"{family:6s} {'PASS' if r['passed'] else 'FAIL'}  reload exact={r['reload_bit_exact']}  "
              f"cache vs full {r['cache_vs_full_max_abs']:.2e}  {hf}")
    print(f"report: {out / 'report.json'}")
    if not ok:
        raise SystemExit(1)
    return report
