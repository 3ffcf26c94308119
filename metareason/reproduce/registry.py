"""Every experiment `metareason reproduce` knows, in the paper's order (E1..E12, then "analogy").

The experiments live in the modules named by `MODULES` (each defines module-level `Experiment`
objects); a new module is one more name in that tuple. A listed module that cannot be imported is
a one-line error naming it.
"""

from __future__ import annotations

import importlib
import re
from typing import Iterable

from metareason.reproduce.base import Experiment

__all__ = ["MODULES", "experiments", "collect", "experiment_order"]

#: The modules (import paths) whose module-level `Experiment` objects make up the registry.
MODULES: tuple[str, ...] = (
    "metareason.reproduce.analogy",
    "metareason.reproduce.trajectories",
    "metareason.reproduce.modes",
    "metareason.reproduce.training",
    "metareason.reproduce.community",
)


def experiment_order(name: str) -> tuple[int, int, str]:
    """Sort key: E1 < E2 < ... < E12 < any other name (alphabetical)."""
    m = re.fullmatch(r"E(\d+)", name)
    return (0, int(m.group(1)), "") if m else (1, 0, name)


def collect(found: Iterable[Experiment]) -> dict[str, Experiment]:
    """{name: experiment} in `experiment_order`; two different experiments of one name: ValueError."""
    out: dict[str, Experiment] = {}
    for exp in found:
        if not isinstance(exp, Experiment):
            raise ValueError(f"{exp!r} is not a metareason.reproduce.Experiment")
        if exp.name in out and out[exp.name] is not exp:
            raise ValueError(f"two experiments are named {exp.name!r} ({out[exp.name].title!r} and {exp.title!r})")
        out[exp.name] = exp
    return {name: out[name] for name in sorted(out, key=experiment_order)}


def experiments(modules: Iterable[str] | None = None) -> dict[str, Experiment]:
    """{name: Experiment} of every module-level `Experiment` in `modules` (default `MODULES`), ordered
    E1..E12 then the others ("analogy")."""
    found: list[Experiment] = []
    for name in MODULES if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"the experiment module {name} (listed in metareason.reproduce.registry.MODULES) "
                              f"cannot be imported: {e}") from e
        found += [v for v in vars(module).values() if isinstance(v, Experiment)]
    return collect(found)
