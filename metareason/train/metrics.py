"""Metrics as JSONL (one object per line: step, split, values) and TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MetricsWriter"]


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
        self._file.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
