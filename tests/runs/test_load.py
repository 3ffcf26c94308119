"""`metareason.load`: an SFT run at its newest and an earlier step, a GRPO run and a Hugging Face
folder give exactly the params their files hold (read back here with orbax / the safetensors
loader directly), with the kind, format, lab, step and provenance of each; anything else is a
one-line error."""

import contextlib
import dataclasses
import io
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import metareason
from metareason.format import HFFormat, LabFormat
from metareason.model import init
from metareason.model.presets import model_preset
from metareason.runs import CheckpointDamaged, LoadedModel, load
from metareason.tokenize import HFTokenizer
from metareason.train import rl, sft
from metareason.train.presets import rl_presets, train_presets
from metareason.train.state import init_state, make_optimizer


def _orbax_state(run_dir, step, template):
    """The TrainState orbax holds for `step`, restored with orbax's own checkpointer (not ours)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template)
    return ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(step) / "state", abstract)


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    cfg = train_presets()["tiny"]
    cfg = dataclasses.replace(cfg, out=tmp_path_factory.mktemp("sft") / "run", steps=8, checkpoint_every=4,
                              final_eval=False, log_every=4)
    with contextlib.redirect_stdout(io.StringIO()):
        sft.train_sft(cfg)
    template = init_state(init(model_preset(cfg.model), jax.random.key(1)), make_optimizer(cfg.optimizer, cfg.steps), 0)
    return cfg, template


@pytest.mark.parametrize("step", [None, 4])
def test_sft_run_at_newest_and_earlier_step(sft_run, step):
    cfg, template = sft_run
    m = load(cfg.out, step)
    expected = _orbax_state(cfg.out, step or 8, template)
    _equal(m.params, expected.params)
    assert int(expected.step) == (step or 8)
    assert m.kind == "lab" and m.step == (step or 8) and m.tokenizer is None and isinstance(m.format, LabFormat)
    assert m.config == model_preset(cfg.model) and m.lab == cfg.lab and m.think_prefix == ""
    assert m.run_config == json.loads((cfg.out / "config.json").read_text())
    assert m.provenance["run"] == "sft" and m.provenance["step"] == m.step
    assert m.provenance["path"] == str(cfg.out.absolute()) and len(m.provenance["config_digest"]) == 16


def test_steps_differ_and_overrides_apply(sft_run):
    cfg, _ = sft_run
    a, b = load(cfg.out, 4), load(cfg.out)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
    half = load(cfg.out, param_dtype="bfloat16")
    assert half.config.param_dtype == "bfloat16"
    assert all(x.dtype == np.dtype("bfloat16") for x in jax.tree.leaves(half.params))
    for x, y in zip(jax.tree.leaves(half.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y.astype("bfloat16"), np.float32))


def test_missing_step_and_bad_override_are_one_line_errors(sft_run):
    cfg, _ = sft_run
    with pytest.raises(FileNotFoundError, match=r"^no checkpoint of step 5 in .*checkpoints \(steps: 4, 8\)$"):
        load(cfg.out, 5)
    with pytest.raises(ValueError, match="expected NAME=VALUE with NAME one of"):
        load(cfg.out, num_layers=3)


def test_a_damaged_named_step_is_refused(tmp_path, sft_run):
    import shutil
    cfg, _ = sft_run
    run = tmp_path / "copy"
    shutil.copytree(cfg.out, run)
    victim = max((p for p in (run / "checkpoints" / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(CheckpointDamaged, match=r"checkpoint step 4 in .* is damaged \(file .* does not match"):
        load(run, 4)
    assert load(run).step == 8


def test_grpo_run(tmp_path):
    cfg = rl_presets()["tiny"]
    cfg = dataclasses.replace(cfg, out=tmp_path / "grpo", steps=2, checkpoint_every=1, final_eval=False)
    with contextlib.redirect_stdout(io.StringIO()):
        rl.train_grpo(cfg)
    m = load(cfg.out, 1)
    updates = cfg.steps * cfg.epochs_per_batch * cfg.minibatches
    template = init_state(init(model_preset(cfg.model), jax.random.key(1)), make_optimizer(cfg.optimizer, updates), 0)
    expected = _orbax_state(cfg.out, 1, template)
    _equal(m.params, expected.params)
    assert m.kind == "lab" and m.step == 1 and m.lab == cfg.lab and m.provenance["run"] == "grpo"
    assert load(cfg.out).step == 2


def test_hugging_face_folder(tmp_path):
    from reference import tiny_hf_dir

    model_dir, config, params, _ = tiny_hf_dir(tmp_path)
    m = load(model_dir)
    _equal(m.params, params)
    assert m.config == config and m.kind == "hf" and m.step is None and m.lab is None and m.run_config is None
    tok = HFTokenizer.from_dir(model_dir)
    chat = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True,
                                   tokenize=False)
    assert isinstance(m.format, HFFormat) and m.format.prompt({"question": "What is 2 + 2?"}) == tok.encode(chat)
    assert m.tokenizer.encode(chat) == tok.encode(chat)
    assert m.provenance["run"] == "hf" and m.think_prefix == ""
    t = m.with_think_prefix("<think>\n")
    assert t.think_prefix == "<think>\n" and t.params is m.params
    assert t.format.prompt({"question": "What is 2 + 2?"}) == tok.encode(chat + "<think>\n")
    with pytest.raises(ValueError, match="Hugging Face folder: it has no steps"):
        load(model_dir, 3)


def test_neither_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load(tmp_path)
    assert str(err.value) == (f"{tmp_path.absolute()} is neither a training run (config.json + checkpoints/) nor a "
                              "Hugging Face model directory (config.json)")


def test_top_level_names():
    assert metareason.load is load and metareason.LoadedModel is LoadedModel
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoadedModel.wrap(model_preset("lab-tiny"), {}).step = 3
