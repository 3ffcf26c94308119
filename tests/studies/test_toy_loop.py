"""The studies' training loop against a hand-written one: gradient descent on a quadratic (closed
form after n steps), its logging / evaluation schedule, and its divergence error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metareason.studies.toy_loop import LoopResult, toy_loop
from metareason.train import TrainingDiverged


@jax.jit
def _gd(x, lr):
    """One GD step on f(x) = 1/2 |x|^2: x <- (1 - lr) x; metrics: the loss before the step."""
    return (1 - lr) * x, {"loss": 0.5 * jnp.sum(x * x), "x": x}


def test_gradient_descent_on_a_quadratic_and_its_schedule():
    x0 = jnp.array([3.0, -4.0])
    lr, steps = 0.1, 7
    seen = []

    def evaluate(x, done):
        seen.append(done)
        return {"norm": float(jnp.linalg.norm(x))}

    run = toy_loop(lambda x, i: _gd(x, lr), x0, steps, log_every=3, evaluate=evaluate, eval_every=2)
    assert isinstance(run, LoopResult)
    np.testing.assert_allclose(run.state, (1 - lr) ** steps * np.asarray(x0), rtol=1e-6)
    # logged after steps 3, 6 and the last (7): the loss before that step, 1/2 |x0|^2 (1 - lr)^(2 (step - 1))
    assert [h["step"] for h in run.history] == [3, 6, 7]
    for h in run.history:
        assert isinstance(h["loss"], float) and isinstance(h["x"], np.ndarray)
        assert h["loss"] == pytest.approx(12.5 * (1 - lr) ** (2 * (h["step"] - 1)), rel=1e-6)
    assert [h["seconds"] for h in run.history] == sorted(h["seconds"] for h in run.history)
    # evaluated at 0, every 2 steps and at the end, on the state after that many steps
    assert seen == [0, 2, 4, 6, 7] and [e["step"] for e in run.evals] == seen
    for e in run.evals:
        assert e["norm"] == pytest.approx(5.0 * (1 - lr) ** e["step"], rel=1e-6)
    assert run.seconds > 0 and run.timed_steps == steps
    assert toy_loop(lambda x, i: _gd(x, lr), x0, steps, time_first_step=False).timed_steps == steps - 1


def test_divergence_raises_training_diverged_naming_the_step():
    # lr 3: |1 - lr| = 2, the iterate doubles every step and overflows float32 (|x| ~ 5 * 2^k)
    with pytest.raises(TrainingDiverged, match=r"toy: non-finite loss at step 64 \(loss inf\)") as err:
        toy_loop(lambda x, i: _gd(x, 3.0), jnp.array([3.0, -4.0]), 200, log_every=32, desc="toy")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="steps and log_every must be >= 1"):
        toy_loop(lambda x, i: _gd(x, 0.1), jnp.zeros(2), 0)
