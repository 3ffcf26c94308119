"""Bad sampling settings and `generate` inputs: one-line errors naming the field or argument,
raised before anything is traced or compiled; and a light import chain."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from metareason.sample import SamplingConfig, SamplingError, generate
from metareason.sample import decode as decode_module
from reference import TINY, random_params


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    assert isinstance(excinfo.value, ValueError)
    return msg


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.5), ("temperature", float("nan")), ("temperature", "hot"),
    ("top_k", -1), ("top_k", 2.5),
    ("top_p", 0.0), ("top_p", 1.5),
    ("max_new_tokens", 0), ("max_new_tokens", 3.0),
    ("stop_tokens", (-1,)), ("stop_tokens", "eos"), ("stop_tokens", (1.5,)),
    ("pad_id", 0.5), ("pad_id", 2**40),
])
def test_bad_sampling_field(field, value):
    with pytest.raises(SamplingError, match=field) as e:
        SamplingConfig(**{field: value})
    _one_line(e)


def test_sampling_config_is_hashable_and_normalised():
    a = SamplingConfig(temperature=1, stop_tokens=[5, 7], top_p=1)
    b = SamplingConfig(temperature=1.0, stop_tokens=(5, 7), top_p=1.0)
    assert a == b and hash(a) == hash(b) and a.stop_tokens == (5, 7)
    assert SamplingConfig(stop_tokens=3).stop_tokens == (3,)
    assert a.replace(temperature=0).greedy and not a.greedy


@pytest.fixture(scope="module")
def model():
    config = TINY["qwen2"]
    return config, random_params(config, seed=0)


@pytest.fixture
def no_compile(monkeypatch):
    """Fails the test if generate reaches the compiled function."""
    def boom(*args, **kwargs):
        raise AssertionError("reached the compiled function")
    monkeypatch.setattr(decode_module, "_generate_jit", boom)


GOOD_PROMPTS = np.asarray([[1, 2, 3], [4, 5, 0]])
GOOD_LENGTHS = np.asarray([3, 2])


@pytest.mark.parametrize("change,pattern", [
    (dict(prompts=np.asarray([1, 2, 3])), "prompts must have 2 dimension"),
    (dict(prompts=GOOD_PROMPTS.astype(np.float32)), "prompts must hold integers"),
    (dict(prompts=np.zeros((2, 0), np.int32), prompt_lengths=np.asarray([1, 1])), "prompts must be int"),
    (dict(prompt_lengths=np.asarray([3])), r"prompt_lengths has shape \(1,\), expected \(2,\)"),
    (dict(prompt_lengths=np.asarray([3, 0])), r"prompt_lengths\[1\] = 0 out of range \[1, 3\]"),
    (dict(prompt_lengths=np.asarray([4, 2])), r"prompt_lengths\[0\] = 4 out of range"),
    (dict(prompt_lengths=np.asarray([3.0, 2.0])), "prompt_lengths must hold integers"),
    (dict(prompts=np.asarray([[1, 2, 101], [4, 5, 0]])), r"prompt token id 101 at prompts\[0, 2\]"),
    (dict(prompts=np.asarray([[1, 2, 3], [4, -3, 0]])), r"prompt token id -3 at prompts\[1, 1\]"),
    (dict(budgets=np.asarray([4, 5])), r"budgets\[1\] = 5 out of range \[0, max_new_tokens=4\]"),
    (dict(budgets=np.asarray([-1, 2])), r"budgets\[0\] = -1"),
    (dict(budgets=np.asarray([1, 2, 3])), "budgets has shape"),
    (dict(sampling=SamplingConfig(temperature=0, max_new_tokens=14)),
     r"prompt length 3 \+ max_new_tokens 14 exceeds max_position_embeddings 16"),
    (dict(sampling=SamplingConfig(temperature=0, max_new_tokens=4, stop_tokens=(101,))), "stop token 101 out of range"),
    (dict(sampling=SamplingConfig(temperature=0.5, max_new_tokens=4), key=None), "key is required"),
    (dict(sampling=dict(temperature=0)), "sampling must be a SamplingConfig"),
    (dict(key=7), "key must be one PRNG key"),
    (dict(key=jax.random.split(jax.random.key(0), 2)), "key must be one PRNG key"),
])
def test_bad_generate_input(model, no_compile, change, pattern):
    config, params = model
    kwargs = dict(prompts=GOOD_PROMPTS, prompt_lengths=GOOD_LENGTHS, config=config.replace(max_position_embeddings=16),
                  sampling=SamplingConfig(temperature=0, max_new_tokens=4), key=jax.random.key(0), budgets=None)
    kwargs.update(change)
    with pytest.raises(SamplingError, match=pattern) as e:
        generate(params, kwargs.pop("prompts"), kwargs.pop("prompt_lengths"), **kwargs)
    _one_line(e)


def test_good_input_reaches_the_compiled_function(model, no_compile):
    """The error cases above fail in the checks, not by accident: good input gets through them,
    and junk (even out-of-range ids) in the padding after a prompt is accepted."""
    config, params = model
    with pytest.raises(AssertionError, match="reached the compiled function"):
        generate(params, np.asarray([[1, 2, 3], [4, 5, -7]]), GOOD_LENGTHS, config=config,
                 sampling=SamplingConfig(temperature=0, max_new_tokens=4), budgets=[4, 0])


def test_import_chain_is_light():
    code = ("import sys, metareason.sample\n"
            "heavy = [m for m in ('tensorflow_datasets', 'grain', 'tensorflow', 'torch', 'transformers')\n"
            "         if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing metareason.sample imported {out.stdout.strip()}"
