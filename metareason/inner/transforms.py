"""Gradient transformations for inner loops, composed with optax's:

    optax.chain(first_order(), optax.sgd(1e-2))     # FOMAML: no gradient through the inner gradient
    optax.masked(optax.sgd(1e-2), trainable_mask(params, "mlp"))

`meta_sgd` (learned per-parameter rates) lives in `metareason.inner.loop`.
"""

from __future__ import annotations

import jax
import optax
from jax import lax

__all__ = ["first_order"]


def first_order() -> optax.GradientTransformation:
    """Stops the gradient of the incoming updates (the inner gradient): chained before the inner
    optimizer, `jax.grad` of a meta-loss does not differentiate through it, so the meta-gradient
    of an SGD inner loop is the query gradient at the adapted parameters (FOMAML, Finn et al.
    2017). The forward values are unchanged; anything the following transformations compute from
    `params` (weight decay, say) or from closed-over learnable values (Meta-SGD's rates) is still
    differentiated."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lax.stop_gradient, updates), state

    return optax.GradientTransformation(init, update)
