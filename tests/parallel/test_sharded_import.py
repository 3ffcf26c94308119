"""Hugging Face import straight into shards, and host memory of sharded init and import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from metareason.model import ModelConfig, flatten, init, load_hf_checkpoint, param_shapes, save_hf_checkpoint
from metareason.parallel import MeshConfig, load_hf_sharded, make_mesh, param_shardings, param_specs
from metareason.parallel.shard import init_fn

from reference import TINY

WORKER = Path(__file__).with_name("memory_worker.py")

# every split dimension divisible by 8, so shards really are slices (TINY's odd vocabularies fall
# back to replication on the vocab axis)
DIVISIBLE = ModelConfig(family="qwen2", vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=3,
                        num_heads=8, num_kv_heads=4, head_dim=8)


CASES = [pytest.param("divisible", (1, 8, 1), marks=pytest.mark.slow), ("divisible", (2, 2, 2))] + [
    (name, (1, 2, 4)) if name in ("divisible", "llama_bias", "qwen3") else
    pytest.param(name, (1, 2, 4), marks=pytest.mark.slow)
    for name in ("divisible", "qwen2_tied", "llama3", "llama_bias", "qwen3")]


@pytest.mark.parametrize("name, shape", CASES)
def test_sharded_import_equals_unsharded(tmp_path, name, shape):
    config = DIVISIBLE if name == "divisible" else TINY[name]
    params = init(config, jax.random.key(1))
    save_hf_checkpoint(tmp_path / "m", config, params, max_shard_bytes=20_000)  # several files
    mesh = make_mesh(MeshConfig(*shape))
    _, sharded = load_hf_sharded(tmp_path / "m", mesh)
    _, plain = load_hf_checkpoint(tmp_path / "m")
    want = flatten(param_shardings(config, mesh))
    for path, leaf in flatten(sharded).items():
        assert leaf.sharding == want[path], path
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flatten(plain)[path]), err_msg=path)
    if name == "divisible" and shape == (1, 2, 4):  # a kernel really split on both of its axes
        shard = flatten(sharded)["layers/mlp/down_proj/kernel"].addressable_shards[0]
        assert shard.data.shape == (3, 128 // 4, 64 // 2)


def _peak(mode: str, hf_dir: Path | None = None) -> dict:
    args = [sys.executable, str(WORKER), mode] + ([str(hf_dir)] if hf_dir else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, out.stderr[-2000:]
    return json.loads(lines[0][len("RESULT "):])


def test_sharded_init_program_never_holds_whole_params():
    """The per-device program of `sharded_init` on an fsdp=8 mesh has no array of any sharded
    leaf's full shape (nor of its random bits): each device draws only its own slice."""
    sys.path.insert(0, str(WORKER.parent))
    from memory_worker import CONFIG

    config = ModelConfig(**CONFIG)
    mesh = make_mesh(MeshConfig(data=1, fsdp=8))
    with jax.set_mesh(mesh):
        text = init_fn(config, mesh).lower(config, jax.random.key(0)).compile().as_text()
    shapes = set(re.findall(r"[a-z]+\d+\[[\d,]+\]", text))
    specs = flatten(param_specs(config, mesh))
    split = 0
    for path, leaf in flatten(param_shapes(config)).items():
        dims = ",".join(map(str, leaf.shape))
        if any(specs[path]):
            split += 1
            assert not {f"f32[{dims}]", f"u32[{dims}]", f"u64[{dims}]"} & shapes, path
        else:  # replicated leaves are whole on every device, so the check can see them
            assert f"f32[{dims}]" in shapes, path
    assert split >= 8


def test_sharded_import_peak_host_memory(tmp_path):
    """Importing ~200 MB of params onto an fsdp=8 mesh raises peak anonymous memory by about one
    copy (the shards themselves, which live in host memory on CPU devices); importing whole and
    then sharding, the way without this feature, needs two."""
    sys.path.insert(0, str(WORKER.parent))
    from memory_worker import CONFIG

    config = ModelConfig(**CONFIG)
    save_hf_checkpoint(tmp_path / "m", config, init(config, jax.random.key(0)), max_shard_bytes=64 << 20)
    sharded = _peak("sharded_import", tmp_path / "m")
    control = _peak("import_then_shard", tmp_path / "m")
    size = sharded["bytes"]
    assert size > 150e6 and sharded["sharded"] and control["sharded"]
    assert sharded["rise"] < 1.4 * size, sharded
    assert control["rise"] > 1.8 * size, control
