"""The README's "Bring your own model" block runs as written (found by its marker comment)."""

import re
from pathlib import Path

import jax
import numpy as np

MARKER = "# readme-example: bring-your-own-model"


def readme_block(marker: str) -> str:
    """The ```python block of README.md whose first line is `marker`."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith(marker + "\n")]
    assert len(blocks) == 1, f"expected one README block starting with {marker!r}, found {len(blocks)}"
    return blocks[0]


def test_bring_your_own_model_block_runs(capsys):
    ns = {"__name__": "readme"}
    exec(compile(readme_block(MARKER), "README.md:bring-your-own-model", "exec"), ns)
    printed = np.array(re.findall(r"[-\d.]+", capsys.readouterr().out), float)
    assert printed.shape == (4,) and np.all(printed > 0)           # the probe: L-hat after each of 4 cuts
    assert np.isfinite(float(ns["metrics"]["loss"])) and float(ns["metrics"]["grad_norm"]) > 0
    assert jax.tree.structure(ns["params"]) == jax.tree.structure(ns["from_nnx"](
        ns["TinyLM"](ns["nnx"].Rngs(0)), vocab_size=32)[1])     # the meta-step kept the params' pytree
