"""Our model against `transformers`' PyTorch implementation on tiny random models.

Import: HF writes a checkpoint, we load it, logits must match. Export: we write a checkpoint,
HF loads it, logits must match. Reference: transformers (eager attention, float32)."""

import copy
import json

import jax
import numpy as np
import pytest

from metareason.model import apply, init, load_hf_checkpoint, save_hf_checkpoint
from reference import TINY, hf_logits, random_hf_model, random_params, torch_and_transformers

SEQ = 40  # longer than the llama3 test config's original context (16), so rope scaling matters


def _tokens(config, batch=2, seq=SEQ, seed=0):
    return np.random.RandomState(seed).randint(0, config.vocab_size, (batch, seq))


@pytest.fixture(scope="module", params=sorted(TINY))
def hf_checkpoint(request, tmp_path_factory):
    name = request.param
    model = random_hf_model(TINY[name], seed=len(name))
    path = tmp_path_factory.mktemp(name) / "ckpt"
    model.save_pretrained(path)
    return name, model, path


def test_import_matches_transformers_fp32(hf_checkpoint):
    name, model, path = hf_checkpoint
    config, params = load_hf_checkpoint(path)
    assert config == TINY[name]  # from_hf_config reads back every field we wrote
    tokens = _tokens(config)
    ref = hf_logits(model, tokens)
    ours = np.asarray(apply(params, tokens, config=config).logits)
    assert ref.std() > 0.5, "reference logits too flat to be a meaningful comparison"
    np.testing.assert_array_less(np.abs(ours - ref).max(), 1e-4)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_bf16_params_match_transformers_bf16(hf_checkpoint):
    torch, _ = torch_and_transformers()
    name, model, path = hf_checkpoint
    config, params = load_hf_checkpoint(path, param_dtype="bfloat16")
    assert all(p.dtype == jax.numpy.bfloat16 for p in jax.tree.leaves(params))
    tokens = _tokens(config)
    ref = hf_logits(copy.deepcopy(model).to(torch.bfloat16), tokens)
    ours = np.asarray(apply(params, tokens, config=config).logits)
    lp, lq = _log_softmax(ref.astype(np.float64)), _log_softmax(ours.astype(np.float64))
    kl = (np.exp(lp) * (lp - lq)).sum(-1).mean()
    assert kl < 1e-3, f"{name}: mean KL(transformers bf16 || ours bf16) = {kl}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_export_loads_in_transformers(name, tmp_path):
    _, transformers = torch_and_transformers()
    config = TINY[name]
    params = random_params(config, seed=1)
    path = save_hf_checkpoint(tmp_path / "export", config, params)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokens = _tokens(config, seed=3)
    ref = hf_logits(model, tokens)
    ours = np.asarray(apply(params, tokens, config=config).logits)
    np.testing.assert_array_less(np.abs(ours - ref).max(), 1e-4)


def test_sharded_export_round_trips(tmp_path):
    _, transformers = torch_and_transformers()
    config = TINY["llama3"]
    params = init(config, jax.random.key(2))
    path = save_hf_checkpoint(tmp_path / "sharded", config, params, max_shard_bytes=40_000)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    config2, params2 = load_hf_checkpoint(path)
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params, params2)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokens = _tokens(config, seed=4)
    np.testing.assert_array_less(np.abs(np.asarray(apply(params, tokens, config=config).logits)
                                        - hf_logits(model, tokens)).max(), 1e-4)


def test_explicit_positions_match_transformers(hf_checkpoint):
    """Positions with gaps (as in packed probes) use the same RoPE as HF. (A constant shift
    would prove nothing: RoPE attention depends on position differences only.)"""
    _, model, path = hf_checkpoint
    config, params = load_hf_checkpoint(path)
    tokens = _tokens(config, batch=1, seq=12)
    positions = np.array([[0, 1, 2, 3, 10, 11, 12, 30, 31, 32, 33, 47]])
    assert np.abs(hf_logits(model, tokens) - hf_logits(model, tokens, position_ids=positions)).max() > 1e-2
    ref = hf_logits(model, tokens, position_ids=positions)
    ours = np.asarray(apply(params, tokens, config=config, positions=positions).logits)
    np.testing.assert_array_less(np.abs(ours - ref).max(), 1e-4)
