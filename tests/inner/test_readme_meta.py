"""The README's meta-learning example runs as written (the block after the marker comment
`<!-- readme-meta-example` in README.md), in at most 12 lines, and its meta-step adapts."""

import pathlib

import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-meta-example"


def readme_block() -> str:
    text = README.read_text()
    assert text.count(MARKER) == 1, f"expected one {MARKER!r} marker in README.md"
    after = text[text.index(MARKER):].split("```python\n", 1)[1]
    return after.split("```", 1)[0]


def test_readme_meta_example_runs():
    code = readme_block()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 12, f"the README example has {len(lines)} lines (at most 12)"
    scope = {}
    exec(compile(code, str(README), "exec"), scope)
    m = scope["metrics"]
    tasks = scope["tasks"]
    assert tasks.context.shape[0] == 2 and len(set(np.asarray(tasks.context_length).tolist())) == 2
    assert np.all(np.asarray(m["inner_after"]) < np.asarray(m["inner_before"]))  # 3 steps lower the support loss
    assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
