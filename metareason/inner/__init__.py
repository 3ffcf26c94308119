"""True inner loops (gradient steps) to set beside the trajectory's pseudo-gradient steps:
`inner_loop` (second-order, first-order, implicit; rematerialisation; parameter subsets),
`meta_sgd` (learned per-parameter learning rates), `reptile_update`; the outer loop over tasks:
`meta_loss`, `make_meta_step` (vmap over tasks; shard the task axis for data parallelism).

Per question (a `metareason.probe.Example`): `implicit_trajectory` / `implicit_update` (the exact
weight update each trajectory prefix amounts to, beside the true gradient), `question_descent` /
`descend` (line-searched true gradient steps on the answer loss or the trajectory's SFT loss).

Algorithms only: the studies built on them (`metareason compare`, Prop 2.1, ICL regression, the
sinusoid benchmark, lab meta-learning) live in `metareason.studies`."""

from metareason.inner.descent import DEFAULT_LRS, SUBSETS, Descent, descend, question_descent
from metareason.inner.implicit import WEIGHTS, ImplicitError, ImplicitUpdate, implicit_trajectory, implicit_update, patch
from metareason.inner.loop import (MODES, REMAT, InnerLoopError, InnerResult, inner_loop, meta_sgd,
                                   reptile_update)
from metareason.inner.meta import make_meta_step, meta_loss
from metareason.inner.objectives import ExampleError, answer_loss, prepare, trajectory_loss

__all__ = ["inner_loop", "InnerResult", "InnerLoopError", "MODES", "REMAT", "meta_sgd", "reptile_update",
           "meta_loss", "make_meta_step",
           "implicit_trajectory", "implicit_update", "ImplicitUpdate", "ImplicitError", "patch", "WEIGHTS",
           "descend", "question_descent", "Descent", "DEFAULT_LRS", "SUBSETS",
           "ExampleError", "prepare", "answer_loss", "trajectory_loss"]

_MOVED = ("compare", "icl_regression", "lab_meta", "prop21", "sinusoid")


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"metareason.inner.{name} moved to metareason.studies.{name}")
    raise AttributeError(f"module 'metareason.inner' has no attribute {name!r}")
