"""Independent references for the tests: tiny random `transformers` models (PyTorch)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from metareason.model import ModelConfig, RopeScaling, flatten, init, param_shapes, save_hf_checkpoint, unflatten
from metareason.probe.inputs import Example
from metareason.studies.community import write_bpe_tokenizer

#: One tiny config per family, each exercising the family's distinguishing features.
TINY = {
    "qwen2": ModelConfig(family="qwen2", vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, rope_theta=10000.0, tie_word_embeddings=False),
    "qwen2_tied": ModelConfig(family="qwen2", vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2,
                              num_heads=4, num_kv_heads=1, rope_theta=1e6, tie_word_embeddings=True),
    "llama3": ModelConfig(family="llama", vocab_size=103, hidden_size=64, intermediate_size=112, num_layers=3,
                          num_heads=8, num_kv_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5,
                          rope_scaling=RopeScaling("llama3", factor=8.0, low_freq_factor=1.0,
                                                   high_freq_factor=4.0, original_max_position_embeddings=16)),
    "llama_bias": ModelConfig(family="llama", vocab_size=99, hidden_size=48, intermediate_size=64, num_layers=2,
                              num_heads=4, num_kv_heads=4, attention_bias=True,
                              rope_scaling=RopeScaling("linear", factor=2.0)),
    "qwen3": ModelConfig(family="qwen3", vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=True),
}


def torch_and_transformers():
    torch = pytest.importorskip("torch", reason="needs the 'reference' extra (torch, transformers)")
    transformers = pytest.importorskip("transformers", reason="needs the 'reference' extra")
    return torch, transformers


def random_hf_model(config: ModelConfig, seed: int = 0, scale: float = 0.15):
    """A `transformers` causal LM of `config` with every tensor random (norm scales around 1,
    biases non-zero), in float32 with eager attention, so every code path carries signal."""
    torch, transformers = torch_and_transformers()
    hf_config = transformers.AutoConfig.for_model(**config.to_hf_config())
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager",
                                                          dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(scale * noise)
    return model.eval()


def hf_logits(model, tokens: np.ndarray, position_ids: np.ndarray | None = None) -> np.ndarray:
    torch, _ = torch_and_transformers()
    kwargs = {}
    if position_ids is not None:
        kwargs["position_ids"] = torch.as_tensor(np.asarray(position_ids), dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long), **kwargs)
    return out.logits.float().numpy()


def random_params(config: ModelConfig, seed: int = 0, scale: float = 0.15):
    """Our params with the same statistics as `random_hf_model`: norm scales 1 + 0.2 N(0, 1),
    embeddings N(0, 1), every other tensor (biases included) `scale` * N(0, 1)."""
    rng = np.random.RandomState(seed)
    out = {}
    for path, s in sorted(flatten(param_shapes(config)).items()):
        noise = rng.standard_normal(s.shape).astype(np.float32)
        if path.endswith("scale"):
            out[path] = 1.0 + 0.2 * noise
        elif path.startswith("embed_tokens"):
            out[path] = noise
        else:
            out[path] = scale * noise
    return jax.tree.map(lambda x: jax.numpy.asarray(x, config.param_dtype), unflatten(out))


# A tiny Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json) for tests.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<think>", "</think>"]
CORPUS = ["What is 12 + 35? Let me think step by step.", "Wait, the carry is 1, so the sum is 47.",
          "Therefore the answer is \\boxed{47}.", "system user assistant You are helpful."] * 20


def write_tiny_tokenizer(path, template, bos):
    """A small byte-level BPE tokenizer trained here (no hub access) with `template`, in `path`
    (`metareason.studies.community.write_bpe_tokenizer` on CORPUS with SPECIALS)."""
    path.mkdir()
    return write_bpe_tokenizer(path, CORPUS, vocab_size=300, specials=SPECIALS, chat_template=template, bos_token=bos)


# Records in the data schema for end-to-end runs on a Hugging Face directory (probe, compare).
ANSWER_ROWS = [{"id": "q1", "question": "What is 12 + 35?", "answer": "47",
                "generations": ["Let me think. Wait, the carry is 1, so the sum is 47. \\boxed{47}",
                                "the sum is 46. Therefore \\boxed{46}"]},
               {"id": "q2", "question": "What is 12 + 35?", "answer": "47", "trajectory": "12 + 35 = 47."}]


def tiny_hf_dir(tmp_path, **config_overrides):
    """A random tiny Qwen2 saved as a Hugging Face directory with a ChatML tokenizer, plus
    ANSWER_ROWS as JSONL: (model_dir, config, params, data_path)."""
    tok_dir = write_tiny_tokenizer(tmp_path / "tok", CHATML, None)
    model_dir = tmp_path / "model"
    config = ModelConfig(**{**dict(family="qwen2", vocab_size=300, hidden_size=32, intermediate_size=64,
                                   num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256),
                            **config_overrides})
    params = init(config, jax.random.key(0))
    save_hf_checkpoint(model_dir, config, params)
    for f in tok_dir.iterdir():
        shutil.copy(f, model_dir / f.name)
    data = tmp_path / "answers.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ANSWER_ROWS) + "\n")
    return model_dir, config, params, data


def random_example(config, rng, P=6, T=14, A=6, scored=(2, 5)):
    """A probe `Example` of random token ids below config.vocab_size: P prompt, T trajectory and A
    answer tokens, answer positions scored[0]:scored[1] scored, every trajectory token typed "word"."""
    targets = np.zeros(A, bool)
    targets[scored[0]:scored[1]] = True
    v = config.vocab_size
    return Example(rng.integers(0, v, P).astype(np.int32), rng.integers(0, v, T).astype(np.int32),
                   rng.integers(0, v, A).astype(np.int32), targets, ("word",) * T, {})


def tree_hash(folder) -> dict[str, str]:
    """Every path under `folder` (relative) -> the sha256 of its bytes ("<dir>" for a directory):
    equal before and after means nothing in the folder was written, added or removed."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}
