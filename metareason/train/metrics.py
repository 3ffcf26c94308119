"""Metrics as JSONL (one object per line: step, split, values) and TensorBoard event files.
metrics.jsonl is strict JSON: a non-finite value (NaN, +-inf) is written as null."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter"]


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float (also numpy / JAX scalars) replaced by None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None


class MetricsWriter:
    """Appends to out/metrics.jsonl and out/tb/. On a resumed run (`start_step` > 0), rows
    logged after `start_step` by the interrupted run are dropped first, so the log reads as if
    the run had never stopped."""

    def __init__(self, out: Path, start_step: int = 0):
        self.path = Path(out) / "metrics.jsonl"
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= start_step:
                        keep.append(line)
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut short by a kill
            self.path.write_text("".join(k + "\n" for k in keep))
        self._file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(out) / "tb"), purge_step=start_step or None)
        except ImportError:  # optional: JSONL always works
            self._tb = None

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        """One row; non-finite values are written as null (and left out of TensorBoard)."""
        row = _json_safe({"step": int(step), "split": split, **values})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
