"""True inner loops (gradient steps) to set beside the trajectory's pseudo-gradient steps:
`inner_loop` (second-order, first-order, implicit; rematerialisation; parameter subsets),
`meta_sgd` (learned per-parameter learning rates), `reptile_update`; the outer loop over tasks:
`meta_loss`, `make_meta_step` (vmap over tasks; shard the task axis for data parallelism)."""

from metareason.inner.loop import (MODES, REMAT, InnerLoopError, InnerResult, inner_loop, meta_sgd,
                                   reptile_update)
from metareason.inner.meta import make_meta_step, meta_loss

__all__ = ["inner_loop", "InnerResult", "InnerLoopError", "MODES", "REMAT", "meta_sgd", "reptile_update",
           "meta_loss", "make_meta_step"]
