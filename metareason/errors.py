"""The library's error base and the range checks of its settings (the bottom layer: imports nothing).

`MetareasonError` is the base of errors that mean "bad input": the command line prints them as
one line, `metareason: <what is wrong>`, with exit code 2 (the traceback with `--debug`).
`ConfigError` is a setting out of range; `check_int` / `check_float` raise it naming the
setting the way the user wrote it (`--optimizer.lr`, or a config field's name).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["MetareasonError", "ConfigError", "check_int", "check_float", "flag_name"]

#: The largest seed accepted (`jax.random.key` takes a uint32-sized seed).
MAX_SEED = 2**32 - 1


class MetareasonError(Exception):
    """Base of the library's bad-input errors (one line, names what is wrong)."""


class ConfigError(MetareasonError, ValueError):
    """An unsupported, inconsistent or out-of-range setting (one line, names the field or flag)."""


def flag_name(prefix: str, field: str) -> str:
    """How the command line spells a config field: flag_name("--optimizer.", "warmup_steps") ->
    "--optimizer.warmup-steps" (a prefix without "--", e.g. "", names the field as is)."""
    return prefix + (field.replace("_", "-") if prefix.startswith("--") else field)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}"


def _check_bounds(name: str, value, lo, hi, lo_open: bool, hi_open: bool, what: str) -> None:
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise ConfigError(f"{name} must be {what} {_bounds(lo, hi, lo_open, hi_open)}, got {value!r}")


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> None:
    """`ConfigError` unless `value` is an int (not a bool) in [lo, hi] (None: unbounded)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    _check_bounds(name, int(value), lo, hi, False, False, "an integer")


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """`ConfigError` unless `value` is a finite real number in the interval from lo to hi
    (closed, or open at an end with `lo_open` / `hi_open`; None: unbounded)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    _check_bounds(name, float(value), lo, hi, lo_open, hi_open, "a number")
