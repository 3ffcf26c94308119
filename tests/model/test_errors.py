"""Bad input: each a one-line error naming the culprit, raised before anything compiles."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.model import (CheckpointError, ConfigError, InputError, ModelConfig, ParamsError, apply,
                              init, init_cache, load_hf_checkpoint, save_hf_checkpoint)
from metareason.model import transformer
from reference import TINY


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = TINY["qwen2"]
    params = init(config, jax.random.key(0))
    return config, params, save_hf_checkpoint(tmp_path_factory.mktemp("ck") / "m", config, params)


def _copy_with(tmp_path, saved, edit_config=None, tensors=None):
    """A copy of the saved checkpoint with config.json edited or the tensors replaced."""
    from safetensors.numpy import load_file, save_file

    _, _, src = saved
    dst = tmp_path / "edited"
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    weights = load_file(src / "model.safetensors")
    if tensors:
        tensors(weights)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_unsupported_architecture(tmp_path, saved):
    path = _copy_with(tmp_path, saved, lambda c: c.update(model_type="mistral", architectures=["MistralForCausalLM"]))
    with pytest.raises(ConfigError, match="unsupported architecture.*mistral") as e:
        load_hf_checkpoint(path)
    _one_line(e)


@pytest.mark.parametrize("field,value,pattern", [
    ("use_sliding_window", True, "use_sliding_window"),
    ("hidden_act", "gelu", "hidden_act"),
    ("some_new_knob", 3, "unsupported config field 'some_new_knob'"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}, "rope_type='yarn'"),
])
def test_unsupported_config_field(tmp_path, saved, field, value, pattern):
    path = _copy_with(tmp_path, saved, lambda c: c.update({field: value}))
    with pytest.raises(ConfigError, match=pattern) as e:
        load_hf_checkpoint(path)
    _one_line(e)


def test_missing_extra_and_misshaped_tensors(tmp_path, saved):
    name = "model.layers.1.mlp.up_proj.weight"
    path = _copy_with(tmp_path, saved, tensors=lambda w: w.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'.*expected shape \\(96, 64\\)") as e:
        load_hf_checkpoint(path)
    _one_line(e)

    (tmp_path / "x").mkdir()
    path = _copy_with(tmp_path / "x", saved, tensors=lambda w: w.update(
        {"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.mlp.extra.weight'"):
        load_hf_checkpoint(path)

    (tmp_path / "y").mkdir()
    path = _copy_with(tmp_path / "y", saved, tensors=lambda w: w.update(
        {"model.layers.0.self_attn.k_proj.weight": np.zeros((64, 64), np.float32)}))
    with pytest.raises(CheckpointError, match=r"k_proj.weight' has shape \(64, 64\), expected \(32, 64\)") as e:
        load_hf_checkpoint(path)
    _one_line(e)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hf_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY["qwen2"].to_hf_config()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="only pickle weights.*pytorch_model.bin") as e:
        load_hf_checkpoint(tmp_path)
    _one_line(e)


def test_save_refuses_to_overwrite_and_replaces_atomically(tmp_path, saved):
    config, params, _ = saved
    path = save_hf_checkpoint(tmp_path / "m", config, params)
    with pytest.raises(CheckpointError, match="exists"):
        save_hf_checkpoint(path, config, params)
    bigger = jax.tree.map(lambda p: p + 1, params)
    save_hf_checkpoint(path, config, bigger, overwrite=True)
    _, back = load_hf_checkpoint(path)
    jax.tree.map(np.testing.assert_array_equal, back, bigger)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directories left behind


def _compiles():
    return transformer._apply_jit._cache_size()


def test_params_errors_before_compiling():
    config = TINY["qwen2"].replace(num_layers=3)  # a config never compiled before
    params = init(config, jax.random.key(0))
    tokens = jnp.zeros((1, 4), jnp.int32)
    before = _compiles()
    bad = dict(params, layers=dict(params["layers"], mlp=dict(params["layers"]["mlp"])))
    bad["layers"]["mlp"]["up_proj"] = {"kernel": jnp.zeros((3, 64, 95))}
    with pytest.raises(ParamsError, match=r"'layers/mlp/up_proj/kernel' has shape \(3, 64, 95\), expected \(3, 64, 96\)"):
        apply(bad, tokens, config=config)
    missing = dict(params)
    missing.pop("norm")
    with pytest.raises(ParamsError, match="missing tensor 'norm/scale'"):
        apply(missing, tokens, config=config)
    with pytest.raises(ParamsError, match="unexpected tensor 'extra/w'"):
        apply(dict(params, extra={"w": jnp.zeros(2)}), tokens, config=config)
    assert _compiles() == before


def test_input_errors_before_compiling():
    config = TINY["qwen2"].replace(num_layers=4)
    params = init(config, jax.random.key(0))
    before = _compiles()
    with pytest.raises(InputError, match=r"token id 101 out of range \[0, 101\)"):
        apply(params, jnp.asarray([[1, 2, 101]]), config=config)
    with pytest.raises(InputError, match="token id -1 out of range"):
        apply(params, np.asarray([[-1, 2]]), config=config)
    with pytest.raises(InputError, match=r"tokens must be int\[batch, seq\]"):
        apply(params, jnp.asarray([1, 2]), config=config)
    with pytest.raises(InputError, match="must be integers"):
        apply(params, jnp.asarray([[1.0, 2.0]]), config=config)
    with pytest.raises(InputError, match=r"positions has shape \(1, 3\), expected \(1, 2\)"):
        apply(params, jnp.asarray([[1, 2]]), config=config, positions=jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(InputError, match=r"mask has shape"):
        apply(params, jnp.asarray([[1, 2]]), config=config, mask=jnp.ones((1, 2, 3), bool))
    cache = init_cache(config, 1, 4)
    with pytest.raises(InputError, match=r"cache overflow: 0 cached \+ 5 new tokens > 4 slots"):
        apply(params, jnp.zeros((1, 5), jnp.int32), config=config, cache=cache)
    assert _compiles() == before


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(family="gpt2"), "unsupported model family 'gpt2'"),
    (dict(num_heads=4, num_kv_heads=3), "not a multiple of num_kv_heads"),
    (dict(hidden_size=30, num_heads=4), "not divisible by num_heads"),
    (dict(remat="sometimes"), "remat must be one of"),
    (dict(param_dtype="int8"), "param_dtype must be one of"),
    (dict(rope_scaling={"kind": "ntk", "factor": 2.0}), "unsupported rope scaling type 'ntk'"),
])
def test_config_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ModelConfig(**kwargs)


def test_load_takes_shardings_not_a_mesh(saved):
    """`shardings=` places each tensor where it says (here: every tensor on device 3, read there
    directly); `mesh=` moved to `metareason.parallel.load_hf_sharded`; bad shardings are one line."""
    from jax.sharding import SingleDeviceSharding

    from metareason.model import param_shapes

    config, params, path = saved
    device = jax.devices()[3]
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(device), param_shapes(config))
    _, placed = load_hf_checkpoint(path, shardings=shardings)
    assert all(x.devices() == {device} for x in jax.tree.leaves(placed))
    jax.tree.map(np.testing.assert_array_equal, placed, params)

    with pytest.raises(TypeError, match="metareason.parallel.load_hf_sharded") as e:
        load_hf_checkpoint(path, mesh=jax.make_mesh((1,), ("data",)))
    _one_line(e)
    with pytest.raises(CheckpointError, match="shardings must be a params-shaped dict.*list") as e:
        load_hf_checkpoint(path, shardings=[shardings])
    _one_line(e)
    with pytest.raises(CheckpointError, match="shardings do not match the params: missing tensor 'lm_head/kernel'") as e:
        load_hf_checkpoint(path, shardings={k: v for k, v in shardings.items() if k != "lm_head"})
    _one_line(e)
    bad = dict(shardings, norm={"scale": "fsdp"})
    with pytest.raises(CheckpointError, match=r"shardings\['norm/scale'\] is a str, not a jax.sharding.Sharding") as e:
        load_hf_checkpoint(path, shardings=bad)
    _one_line(e)
