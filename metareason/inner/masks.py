"""Which weights move: one bool pytree, built by `trainable_mask`, for every caller.

    mask = trainable_mask(params, "mlp")                          # the MLP kernels only
    mask = trainable_mask(params, lambda path, leaf: path[0] == "lm_head")   # ANIL: the head only
    optax.masked(optax.sgd(1e-2), mask)                           # optax takes it as is
    inner_loop(loss_fn, params, batch, opt, steps=3, trainable=mask)   # or trainable="mlp"
    descend(objective, params, steps=4, subset="mlp")             # the same mask underneath

The implicit-update analysis (`metareason.inner.implicit`) differentiates with respect to the
"mlp" selection too. A `metareason.model.CausalLM` whose MLP kernels are not named so can
declare them as `mlp_kernels=` a spec for this function (a predicate), used as
`trainable_mask(params, lm.mlp_kernels or "mlp")`.

A leaf's path is a tuple of strings: dict keys, sequence indices (as "0", "1", ...) and attribute
names, with a trailing "value" dropped (Flax NNX `State` leaves), e.g.
("layers", "mlp", "gate_proj", "kernel") for our params or ("layers", "0", "mlp", "up_proj",
"kernel") for an NNX model's state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

__all__ = ["SUBSETS", "MaskError", "leaf_path", "is_mlp_kernel", "trainable_mask", "as_trainable"]


class MaskError(ValueError):
    """An unknown subset or a malformed mask (one line, names what is wrong)."""


def leaf_path(path: tuple) -> tuple[str, ...]:
    """A `jax.tree_util` key path as a tuple of strings (see the module docstring)."""
    out = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                out.append(str(getattr(key, attr)))
                break
        else:
            out.append(str(key))
    if len(out) > 1 and out[-1] == "value":
        out.pop()
    return tuple(out)


def is_mlp_kernel(path: tuple[str, ...], leaf: Any = None) -> bool:
    """True for an MLP's kernel: a path through a module whose name contains "mlp" (any case),
    ending in "kernel" (our params: layers/mlp/{gate,up,down}_proj/kernel; Flax Dense/Linear)."""
    return len(path) > 1 and path[-1] == "kernel" and any("mlp" in p.lower() for p in path[:-1])


_PREDICATES: dict[str, Callable[[tuple[str, ...], Any], bool]] = {
    "all": lambda path, leaf: True,
    "mlp": is_mlp_kernel,
}

#: Named subsets: every leaf, or the MLP kernels (the weights the implicit updates live in).
SUBSETS = tuple(_PREDICATES)


def trainable_mask(params: Any, spec: str | Callable[[tuple[str, ...], Any], bool] = "all", *,
                   error: type[Exception] = MaskError) -> Any:
    """A pytree of Python bools like `params`: True where the leaf moves.

    Args:
      params: any pytree of arrays (only its structure and leaf paths are read; tracers are fine).
      spec: a name in `SUBSETS` ("all", "mlp") or a predicate `(path: tuple[str, ...], leaf) ->
        bool` (see the module docstring for paths).

    Returns:
      bools in the structure of params: usable as `optax.masked(opt, mask)`, as
      `inner_loop(trainable=)`, and by `descend` / `question_descent`.

    Raises `error` (default `MaskError`; callers pass their own error class) on an unknown name,
    a predicate that does not return a bool, or a selection of no leaf.
    """
    if isinstance(spec, str):
        if spec not in SUBSETS:
            raise error(f"unknown weight subset {spec!r} (known: {', '.join(SUBSETS)}, or a predicate "
                        "(path, leaf) -> bool)")
        pred = _PREDICATES[spec]
    elif callable(spec):
        pred = spec
    else:
        raise error(f"spec must be a subset name or a predicate (path, leaf) -> bool, got {type(spec).__name__}")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    marks = []
    for path, leaf in flat:
        mark = pred(leaf_path(path), leaf)
        if not isinstance(mark, (bool, np.bool_)):
            raise error(f"the predicate must return a Python bool, got {type(mark).__name__} at "
                        f"{'/'.join(leaf_path(path))}")
        marks.append(bool(mark))
    if not any(marks):
        raise error(f"the subset {spec if isinstance(spec, str) else 'predicate'!r} selects no leaf of params")
    return jax.tree_util.tree_unflatten(treedef, marks)


def as_trainable(params: Any, trainable: Any, *, error: type[Exception] = MaskError) -> Any:
    """The bool mask for `trainable`: None (everything), a subset name or predicate
    (`trainable_mask`), or a bool pytree like params (checked, returned)."""
    if trainable is None:
        return jax.tree.map(lambda _: True, params)
    if isinstance(trainable, str) or callable(trainable):
        return trainable_mask(params, trainable, error=error)
    if jax.tree.structure(trainable) != jax.tree.structure(params):
        raise error(f"trainable must have the same pytree structure as params "
                    f"({jax.tree.structure(trainable)} vs {jax.tree.structure(params)})")
    return trainable
