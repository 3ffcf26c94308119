"""True inner loops (gradient steps) to set beside the trajectory's pseudo-gradient steps, built
from optax-style pieces:

- which weights move: `trainable_mask(params, "mlp" | "all" | predicate)`, one bool pytree for
  `optax.masked`, `inner_loop(trainable=)`, `descend(subset=)` and the implicit update;
- first order: `first_order()`, a gradient transformation chained before the inner optimizer;
- implicit differentiation: `implicit_diff(optimality_fn)(solver)` around any inner solver
  (`proximal_optimality`: iMAML's condition);
- `inner_loop` (second-order, first-order, implicit; rematerialisation; parameter subsets),
  `meta_sgd` (learned per-parameter learning rates), `reptile_update`; the outer loop over tasks:
  `meta_loss`, `make_meta_step(support_loss, query_loss, inner, outer)` (vmap over tasks; shard
  the task axis for data parallelism).

Per question (a `metareason.probe.Example`), for our `ModelConfig` or any `CausalLM`: `prepare` /
`prepare_many` / `pad_to` (fixed, stackable shapes), `answer_loss` (the probe's loss at one cut),
`trajectory_loss`; `implicit_trajectory` / `implicit_update` (the exact weight update each
trajectory prefix amounts to, beside the true gradient; our transformer only),
`question_descent` / `descend` (line-searched true gradient steps on the answer loss or the
trajectory's SFT loss)."""

from metareason.inner.descent import DEFAULT_LRS, Descent, descend, question_descent
from metareason.inner.implicit import WEIGHTS, ImplicitError, ImplicitUpdate, implicit_trajectory, implicit_update, patch
from metareason.inner.implicit_diff import ImplicitDiffError, implicit_diff, proximal_optimality
from metareason.inner.loop import (MODES, REMAT, InnerLoopError, InnerResult, inner_loop, meta_sgd,
                                   reptile_update)
from metareason.inner.masks import SUBSETS, MaskError, trainable_mask
from metareason.inner.meta import make_meta_step, meta_loss
from metareason.inner.objectives import (ExampleError, Prepared, answer_loss, pad_to, prepare, prepare_many,
                                         trajectory_loss)
from metareason.inner.transforms import first_order

__all__ = ["inner_loop", "InnerResult", "InnerLoopError", "MODES", "REMAT", "meta_sgd", "reptile_update",
           "meta_loss", "make_meta_step",
           "trainable_mask", "MaskError", "first_order", "implicit_diff", "proximal_optimality", "ImplicitDiffError",
           "implicit_trajectory", "implicit_update", "ImplicitUpdate", "ImplicitError", "patch", "WEIGHTS",
           "descend", "question_descent", "Descent", "DEFAULT_LRS", "SUBSETS",
           "ExampleError", "Prepared", "prepare", "prepare_many", "pad_to", "answer_loss", "trajectory_loss"]
