"""Checkpoints: orbax `CheckpointManager` (atomic step directories, kept N deep) plus a
checksum manifest per step, so a damaged checkpoint (a truncated or altered file) is detected
before it is trusted, reported in one line, and the previous one used instead. A checkpoint can
be restored whole (`restore_latest`) or in part, at any step (`restore`: e.g. the params alone,
without the optimizer state's structure)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

__all__ = ["Checkpointer", "CheckpointDamaged", "abstract_like"]

log = logging.getLogger("metareason.checkpoint")


class CheckpointDamaged(RuntimeError):
    """Every checkpoint present is damaged (one line, names the steps and the reason)."""


def _digest(step_dir: Path) -> dict[str, str]:
    out = {}
    for f in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[str(f.relative_to(step_dir))] = h.hexdigest()
    return out


class Checkpointer:
    """Saves and restores (state pytree, JSON extra) by step under `directory`.

    >>> ckpt = Checkpointer("/abs/run/checkpoints", keep=3)
    >>> ckpt.save(100, state, {"data": iterator_state})
    >>> step, state, extra = ckpt.restore_latest(abstract_state)   # or None if there is none
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()  # orbax needs absolute paths
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sums = self.directory / "checksums"
        self._sums.mkdir(parents=True, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves and waits until the step is on disk, then records its checksums.

        Multi-process: every process calls it (each writes its own shards to the shared
        directory); process 0 writes the checksums, and all return once they are written."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        extra=ocp.args.JsonSave(extra)), force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            step_dir = self.directory / str(step)
            tmp = self._sums / f".{step}.json.tmp"
            tmp.write_text(json.dumps(_digest(step_dir)))
            tmp.replace(self._sums / f"{step}.json")
            kept = {str(s) for s in self.manager.all_steps()}
            for f in self._sums.glob("*.json"):
                if f.stem not in kept:
                    f.unlink()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"metareason checkpoint {step} summed")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _damage(self, step: int) -> str | None:
        """Why `step` cannot be trusted, or None."""
        manifest = self._sums / f"{step}.json"
        if not manifest.exists():
            return None  # saved but not yet summed (a crash in between): orbax finalised it, try it
        expected = json.loads(manifest.read_text())
        found = _digest(self.directory / str(step))
        for name, digest in expected.items():
            if name not in found:
                return f"file {name} is missing"
            if found[name] != digest:
                return f"file {name} does not match its checksum (truncated or altered)"
        return None

    def _agreed_damage(self, step: int) -> str | None:
        """`_damage(step)` as process 0 sees it, the same on every process (one process hashes;
        the others would otherwise each read the whole checkpoint and might disagree, then call
        the collective restore on different steps)."""
        if jax.process_count() == 1:
            return self._damage(step)
        reason = self._damage(step) if jax.process_index() == 0 else None
        code = np.frombuffer((reason or "").encode()[:255].ljust(255, b"\0"), np.uint8)
        agreed = multihost_utils.broadcast_one_to_all(code)
        text = bytes(np.asarray(agreed, np.uint8)).rstrip(b"\0").decode(errors="replace")
        return text or None

    def _restore(self, step: int, abstract: Any, partial: bool) -> tuple[Any, dict]:
        """(state, extra) of `step`, trusted as is (the caller checked it)."""
        if partial:  # only the fields `abstract` names (e.g. {"params": ...}): no optimizer structure needed
            restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None)),
                                        abstract)
            state = ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args, partial_restore=True)
        else:
            state = ocp.args.StandardRestore(abstract)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=state, extra=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["extra"])

    @staticmethod
    def _first_line(err: Exception) -> str:
        """An orbax / tensorstore error in one line (they are long)."""
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"

    def restore(self, abstract: Any, step: int | None = None, *, partial: bool = False) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of checkpoint `step`, or of the newest intact one (`step` None; None if
        there is none; a damaged newer one is reported in one line and the previous one used).

        `abstract`: the state's structure as `jax.ShapeDtypeStruct`s (`jax.eval_shape`, `abstract_like`),
        with shardings to restore straight into them. `partial`: `abstract` is a dict naming some of the
        state's fields (e.g. {"params": ...}) and only those are read and returned. A named `step` that is
        absent raises FileNotFoundError, a damaged one CheckpointDamaged (each one line)."""
        steps = self.steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory} (steps: "
                                        f"{', '.join(map(str, steps)) or 'none'})")
            reason = self._agreed_damage(step)
            if reason is None:
                try:
                    return (step, *self._restore(step, abstract, partial))
                except Exception as err:
                    reason = self._first_line(err)
            raise CheckpointDamaged(f"checkpoint step {step} in {self.directory} is damaged ({reason})")
        problems = []
        for s in reversed(steps):
            reason = self._agreed_damage(s)
            if reason is None:
                try:
                    return (s, *self._restore(s, abstract, partial))
                except Exception as err:
                    reason = self._first_line(err)
            msg = f"checkpoint step {s} in {self.directory} is damaged ({reason})"
            log.warning("%s; trying an older one", msg)
            print(f"warning: {msg}; trying an older one", flush=True)
            problems.append(f"step {s}: {reason}")
        if steps:
            raise CheckpointDamaged(f"no intact checkpoint in {self.directory}: " + "; ".join(problems))
        return None

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of the newest intact checkpoint; None if there is none.

        `abstract_state`: the state's structure as `jax.ShapeDtypeStruct`s (`jax.eval_shape`).
        A damaged newest checkpoint is reported (logged, one line) and the previous one used."""
        return self.restore(abstract_state)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s with the shapes, dtypes and shardings of `tree`'s arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
