"""Bad input on the command line: every case fails before any work with exit code 2 and one line on
stderr, `metareason: <what is wrong>`, no traceback, and nothing written outside a new folder.

One table of bad inputs: flags of each command (ranges, finiteness, types), data files, Hugging Face
model folders (tiny configs, damaged weights, bad chat templates) and output targets, each written
into a fresh `tmp_path`. Each runs through `metareason.cli.main` in-process; a few also through a
subprocess (`python -m metareason.cli`) for the real exit code and stderr. `--debug` and
METAREASON_DEBUG=1 bring the traceback back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metareason.cli import main
from reference import tiny_hf_dir


# -- the inputs ----------------------------------------------------------------------------------

def _rows(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


GOOD = {"id": "a", "question": "What is 2 + 3?", "answer": "5", "generations": ["2 + 3 = 5. \\boxed{5}"]}

# name -> argv of flags (parse-time checks; "M" stands for a model path that need not exist)
FLAGS = {
    # train
    "train steps 0": ["train", "--steps", "0"],
    "train steps -5": ["train", "--steps", "-5"],
    "train steps text": ["train", "--steps", "abc"],
    "train steps float": ["train", "--steps", "1.5"],
    "train lr -1": ["train", "--optimizer.lr", "-1"],
    "train lr 0": ["train", "--optimizer.lr", "0"],
    "train lr inf": ["train", "--optimizer.lr", "inf"],
    "train lr nan": ["train", "--optimizer.lr", "nan"],
    "train b1 2.0": ["train", "--optimizer.b1", "2.0"],
    "train b1 1.0": ["train", "--optimizer.b1", "1.0"],
    "train b2 -0.1": ["train", "--optimizer.b2", "-0.1"],
    "train warmup -1": ["train", "--optimizer.warmup-steps", "-1"],
    "train weight decay -1": ["train", "--optimizer.weight-decay", "-1"],
    "train clip 0": ["train", "--optimizer.clip-norm", "0"],
    "train final fraction 2": ["train", "--optimizer.final-lr-fraction", "2"],
    "train log-every 0": ["train", "--log-every", "0"],
    "train log-every -1": ["train", "--log-every", "-1"],
    "train eval-every -1": ["train", "--eval-every", "-1"],
    "train eval-questions 0": ["train", "--eval-questions", "0"],
    "train batch 0": ["train", "--batch-size", "0"],
    "train seq-len 0": ["train", "--seq-len", "0"],
    "train k 0": ["train", "--k-trajectories", "0"],
    "train slots 0": ["train", "--slots-per-question", "0"],
    "train packing -1": ["train", "--packing-bins", "-1"],
    "train huge seed": ["train", "--seed", "9" * 30],
    "train negative seed": ["train", "--seed", "-1"],
    "train lab train-size 0": ["train", "--lab.train-size", "0"],
    "train lab eval-size -3": ["train", "--lab.eval-size", "-3"],
    "train lab huge seed": ["train", "--lab.seed", str(2**70)],
    "train lab family": ["train", "--lab.families", "nope"],
    "train lab difficulty 0": ["train", "--lab.difficulty", "0"],
    "train lab style": ["train", "--lab.style", "nope"],
    "train unknown flag": ["train", "--stepz", "3"],
    "train preset unknown": ["train", "--preset", "nope"],
    "train preset missing": ["train", "--preset"],
    "train model overrides": ["train", "--model-overrides", "remat=sideways"],
    # rl
    "rl steps 0": ["rl", "--steps", "0"],
    "rl temperature -1": ["rl", "--temperature", "-1"],
    "rl temperature 0": ["rl", "--temperature", "0"],
    "rl temperature nan": ["rl", "--temperature", "nan"],
    "rl top-p 0": ["rl", "--top-p", "0"],
    "rl top-p 1.5": ["rl", "--top-p", "1.5"],
    "rl group 0": ["rl", "--group-size", "0"],
    "rl update-n > G": ["rl", "--update-n", "99"],
    "rl minibatches not dividing": ["rl", "--minibatches", "7"],
    "rl lr inf": ["rl", "--optimizer.lr", "inf"],
    "rl checkpoint-every 0": ["rl", "--checkpoint-every", "0"],
    "rl checkpoint-every -1": ["rl", "--checkpoint-every", "-1"],
    "rl log-every 0": ["rl", "--log-every", "0"],
    "rl kl inf": ["rl", "--loss.kl-coef", "inf"],
    "rl clip-low 1": ["rl", "--loss.clip-low", "1"],
    "rl advantage": ["rl", "--advantage", "nope"],
    "rl lab train-size 0": ["rl", "--lab.train-size", "0"],
    "rl max-new-tokens 0": ["rl", "--max-new-tokens", "0"],
    "rl huge seed": ["rl", "--seed", str(2**64)],
    # eval
    "eval n 0": ["eval", "--model", "M", "--n", "0"],
    "eval k > n": ["eval", "--model", "M", "--n", "2", "--k", "4"],
    "eval k 0": ["eval", "--model", "M", "--k", "0"],
    "eval temperature -1": ["eval", "--model", "M", "--temperature", "-1"],
    "eval temperature inf": ["eval", "--model", "M", "--temperature", "inf"],
    "eval top-p 0": ["eval", "--model", "M", "--top-p", "0"],
    "eval top-p 2": ["eval", "--model", "M", "--top-p", "2"],
    "eval top-k -1": ["eval", "--model", "M", "--top-k", "-1"],
    "eval max-new-tokens 0": ["eval", "--model", "M", "--max-new-tokens", "0"],
    "eval max-questions -1": ["eval", "--model", "M", "--max-questions", "-1"],
    "eval batch < n": ["eval", "--model", "M", "--n", "8", "--batch-size", "4"],
    "eval huge seed": ["eval", "--model", "M", "--seed", "9" * 25],
    "eval no model": ["eval"],
    "eval no data": ["eval", "--model", "M", "--data"],
    # probe
    "probe max-questions 0": ["probe", "--model", "M", "--max-questions", "0"],
    "probe max-questions -1": ["probe", "--model", "M", "--max-questions", "-1"],
    "probe every 0": ["probe", "--model", "M", "--every", "0"],
    "probe samples -1": ["probe", "--model", "M", "--samples", "-1"],
    "probe ema 2": ["probe", "--model", "M", "--ema-alpha", "2"],
    "probe ema nan": ["probe", "--model", "M", "--ema-alpha", "nan"],
    "probe grid 1": ["probe", "--model", "M", "--landscape-grid", "1"],
    "probe budget -8": ["probe", "--model", "M", "--budgets", "0", "-8"],
    "probe method": ["probe", "--model", "M", "--method", "nope"],
    "probe huge seed": ["probe", "--model", "M", "--seed", str(2**40)],
    # compare
    "compare steps 0": ["compare", "--model", "M", "--steps", "0"],
    "compare every 0": ["compare", "--model", "M", "--every", "0"],
    "compare max-tokens 0": ["compare", "--model", "M", "--max-tokens", "0"],
    "compare max-questions -1": ["compare", "--model", "M", "--max-questions", "-1"],
    "compare subset": ["compare", "--model", "M", "--subset", "attention"],
    # demo
    "demo steps 0": ["demo", "--steps", "0"],
    "demo steps -1": ["demo", "--steps", "-1"],
    "demo eval-questions 0": ["demo", "--eval-questions", "0"],
    "demo samples -2": ["demo", "--samples", "-2"],
    "demo budgets -1": ["demo", "--budgets", "-1"],
    "demo huge seed": ["demo", "--seed", "9" * 40],
    # the command itself
    "unknown command": ["trian", "--steps", "3"],
    "selfcheck unknown flag": ["selfcheck", "--nope"],
}

# name -> rows of a data file (a list of dicts / raw lines), or a callable(tmp) -> path
DATA = {
    "empty file": [],
    "blank lines only": ["", "   "],
    "not JSON": ["{question: 1"],
    "a list row": [[1, 2]],
    "missing answer": [{"question": "q"}],
    "missing question": [{"answer": "1"}],
    "empty question": [{"question": "  ", "answer": "1"}],
    "answer a list": [{"question": "q", "answer": ["1"]}],
    "generations a string": [{**GOOD, "generations": "x"}],
    "generation not text": [{**GOOD, "generations": [1]}],
    "difficulty text": [{**GOOD, "difficulty": "hard"}],
    "difficulty -5": [{**GOOD, "difficulty": -5}],
    "difficulty huge": ['{"id": "a", "question": "q", "answer": "1", "difficulty": ' + "9" * 30 + "}"],
    "id huge integer": ['{"id": ' + "9" * 40 + ', "question": "q", "answer": "1"}'],
    "deeply nested JSON": ['{"question": "q", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    "answer of 5000 digits": ['{"question": "q", "answer": ' + "7" * 5000 + "}"],
    "question of 2M characters": [{"question": "x" * 2_000_000, "answer": "1"}],
    "same id, two questions": [GOOD, {**GOOD, "question": "What is 3 + 3?"}],
    "aliases disagree": [{"question": "q", "problem": "p", "answer": "1"}],
    "not UTF-8": lambda tmp: _bytes(tmp / "bad.jsonl", b'{"question": "\xff", "answer": "1"}\n'),
    "not a parquet file": lambda tmp: _bytes(tmp / "bad.parquet", b"PAR1 not really"),
    "unsupported suffix": lambda tmp: _bytes(tmp / "data.csv", b"question,answer\nq,1\n"),
    "no such file": lambda tmp: str(tmp / "missing.jsonl"),
    "a directory": lambda tmp: (tmp / "dir.jsonl").mkdir() or str(tmp / "dir.jsonl"),
}


def _bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# name -> edit(model_dir) of a copy of the tiny Hugging Face folder
def _config_edit(**fields):
    def edit(d: Path):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(fields)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _write(name: str, text: str | bytes):
    def edit(d: Path):
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return edit


def _truncate(d: Path):
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _nan_weights(d: Path):
    from safetensors.numpy import load_file, save_file
    tensors = load_file(d / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})


def _template(template):
    def edit(d: Path):
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        cfg["chat_template"] = template
        (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return edit


HF = {
    "config.json a list": _write("config.json", "[1, 2]"),
    "config.json not JSON": _write("config.json", "{"),
    "config.json nested deeply": _write("config.json", "[" * 100_000 + "]" * 100_000),
    "config.json missing": lambda d: (d / "config.json").unlink(),
    "rms_norm_eps -1": _config_edit(rms_norm_eps=-1),
    "rms_norm_eps 0": _config_edit(rms_norm_eps=0),
    "rope_theta -1": _config_edit(rope_parameters={"rope_type": "default", "rope_theta": -1.0}),
    "vocab_size -1": _config_edit(vocab_size=-1),
    "hidden_size not divisible": _config_edit(hidden_size=30),
    "unknown model_type": _config_edit(model_type="gpt2"),
    "unknown field": _config_edit(sliding_attention_magic=3),
    "missing field": _config_edit(num_hidden_layers=None),
    "hidden_act gelu": _config_edit(hidden_act="gelu"),
    "weights truncated": _truncate,
    "weights garbage": _write("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxxx"),
    "weights missing": lambda d: (d / "model.safetensors").unlink(),
    "weights all NaN": _nan_weights,
    "index garbage": _write("model.safetensors.index.json", "{}"),
    "tokenizer.json missing": lambda d: (d / "tokenizer.json").unlink(),
    "tokenizer.json garbage": _write("tokenizer.json", "{}"),
    "tokenizer_config a list": _write("tokenizer_config.json", "[]"),
    "chat template syntax": _template("{% for m in messages %}{{ m.content }"),
    "chat template sandbox": _template("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}"),
    "chat template raises": _template("{{ raise_exception('no system prompt') }}"),
}


# -- running a case ------------------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _assert_nothing_written_outside_new_folders(before: dict[str, str], after: dict[str, str]):
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, f"changed or removed: {changed[:3]}"
    old_dirs = {p for p, h in before.items() if h == "dir"} | {"."}
    for p in set(after) - set(before):
        parent = str(Path(p).parent)
        assert parent not in old_dirs or after[p] == "dir", f"new file {p} in an existing folder"


def _run(argv, tmp_path, capsys) -> tuple[int, str]:
    before = _snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    _assert_nothing_written_outside_new_folders(before, _snapshot(tmp_path))
    return stop.value.code, err


def _assert_one_line(code, err, argv):
    assert code == 2, (argv, code, err)
    assert err.endswith("\n") and err.count("\n") == 1, (argv, err)
    assert err.startswith("metareason: ") and "Traceback" not in err, (argv, err)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    model_dir, _, _, data = tiny_hf_dir(tmp_path_factory.mktemp("hf"))
    return model_dir, data


def _cases():
    for name, argv in FLAGS.items():
        yield pytest.param("flag", name, id=f"flag: {name}")
    for name in DATA:
        yield pytest.param("data", name, id=f"data: {name}")
    for name in HF:
        yield pytest.param("hf", name, id=f"hf: {name}")
    for name in OUT:
        yield pytest.param("out", name, id=f"out: {name}")


def _argv(kind: str, name: str, tmp_path: Path, hf_model) -> list[str]:
    if kind == "flag":
        return [a.replace("M", str(tmp_path / "no-model")) if a == "M" else a for a in FLAGS[name]]
    model_dir, good_data = hf_model
    if kind == "data":
        rows = DATA[name]
        data = rows(tmp_path) if callable(rows) else _rows(tmp_path / "data.jsonl", rows)
        return ["eval", "--model", str(model_dir), "--data", data, "--n", "1", "--k", "1",
                "--out", str(tmp_path / "new")]
    if kind == "hf":
        model = tmp_path / "model"
        shutil.copytree(model_dir, model)
        HF[name](model)
        return ["eval", "--model", str(model), "--data", str(good_data), "--n", "1", "--k", "1",
                "--max-new-tokens", "4", "--out", str(tmp_path / "new")]
    return OUT[name](tmp_path, model_dir, good_data)


def _probe_no_generations(tmp, model, data):
    bare = _rows(tmp / "bare.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    return ["probe", "--model", str(model), "--data", bare, "--out", str(tmp / "new")]


def _sft_no_generations(tmp, model, data):
    bare = _rows(tmp / "bare.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    return ["train", "--init", str(model), "--data", bare, "--out", str(tmp / "new"), "--steps", "1"]


def _a_file(tmp, model, data):
    (tmp / "taken").write_text("not a folder")
    return ["eval", "--model", str(model), "--data", str(data), "--n", "1", "--k", "1", "--out", str(tmp / "taken")]


def _under_a_file(tmp, model, data):
    (tmp / "taken").write_text("not a folder")
    return ["eval", "--model", str(model), "--data", str(data), "--n", "1", "--k", "1",
            "--out", str(tmp / "taken" / "sub")]


OUT = {
    "probe: records without generations": _probe_no_generations,
    "train: records without generations": _sft_no_generations,
    "eval --out is a file": _a_file,
    "eval --out under a file": _under_a_file,
    "train --data without --init": lambda tmp, m, d: ["train", "--data", str(d), "--out", str(tmp / "new")],
    "rl HF model on lab data": lambda tmp, m, d: ["rl", "--init", str(m), "--out", str(tmp / "new")],
    "eval a lab split on an HF model": lambda tmp, m, d: ["eval", "--model", str(m), "--data", "lab:test",
                                                          "--n", "1", "--k", "1", "--out", str(tmp / "new")],
    "eval no such model": lambda tmp, m, d: ["eval", "--model", str(tmp / "nothing"), "--out", str(tmp / "new")],
    "probe no such model": lambda tmp, m, d: ["probe", "--model", str(tmp / "nothing"), "--out", str(tmp / "new")],
}


@pytest.mark.parametrize("kind,name", list(_cases()))
def test_bad_input_is_one_line_and_exit_2(kind, name, tmp_path, capsys, hf_model, monkeypatch):
    monkeypatch.delenv("METAREASON_DEBUG", raising=False)
    argv = _argv(kind, name, tmp_path, hf_model)
    code, err = _run(argv, tmp_path, capsys)
    _assert_one_line(code, err, argv)


def test_the_table_covers_at_least_100_bad_inputs():
    assert len(FLAGS) + len(DATA) + len(HF) + len(OUT) >= 100


# -- the real process: exit code, stderr, --debug ------------------------------------------------

def _cli(args, tmp_path, **env):
    root = Path(__file__).resolve().parents[1]
    environ = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu", **env}
    environ.pop("METAREASON_DEBUG", None) if "METAREASON_DEBUG" not in env else None
    return subprocess.run([sys.executable, "-m", "metareason.cli", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["train", "--optimizer.lr", "nan"], ["eval", "--model", "M", "--k", "9"],
                                  ["train", "--stepz", "1"], ["nope"]])
def test_a_subprocess_gets_exit_2_and_one_line(args, tmp_path):
    res = _cli(args, tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("metareason: "), res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.iterdir())


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METAREASON_DEBUG", raising=False)
    from metareason.errors import ConfigError
    for argv in (["--debug", "train", "--steps", "0"], ["train", "--steps", "0", "--debug"]):
        with pytest.raises(ConfigError, match=r"^--steps must be an integer >= 1, got 0$"):
            main(argv)
    monkeypatch.setenv("METAREASON_DEBUG", "1")
    with pytest.raises(ConfigError, match="--optimizer.lr"):
        main(["train", "--optimizer.lr", "-1"])
    res = _cli(["train", "--steps", "0"], tmp_path, METAREASON_DEBUG="1")
    assert res.returncode == 1 and "Traceback" in res.stderr and "--steps must be" in res.stderr


def test_an_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    import metareason.cli as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", interrupted)
    with pytest.raises(SystemExit) as stop:
        main(["train"])
    assert stop.value.code == 130 and capsys.readouterr().err == "metareason: interrupted\n"


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    import metareason.cli as cli

    def broken(argv):
        raise TypeError("an internal bug")

    monkeypatch.setitem(cli.COMMANDS, "train", broken)
    with pytest.raises(TypeError, match="an internal bug"):
        main(["train"])
