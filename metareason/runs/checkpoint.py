"""Checkpoints: orbax `CheckpointManager` (atomic step directories, kept N deep) plus a
checksum manifest per step (checkpoints/checksums/STEP.json, sha256 of every file), so a damaged
checkpoint (a truncated, altered or deleted file, an empty step folder, an unreadable manifest) is
detected before it is trusted, reported in one line, and the previous one used instead.

A step counts as committed only once its manifest is written: a step folder without one (a kill
between orbax's commit and the manifest write leaves exactly this) is unverified and treated as
damaged, never restored. When a run resumes (`restore_latest`) past damaged steps, they are moved
aside, renamed `damaged-STEP-N/` (manifest: checksums/damaged-STEP-N.json), never deleted, so the
run can save that step again and finish. Saves are synchronous (orbax's async threads off), so a
write failure is one error line at once, not a stall; `check_writable` refuses an unwritable
folder before a run starts. A checkpoint can be restored whole (`restore_latest`) or in part, at
any step (`restore`: e.g. the params alone, without the optimizer state's structure)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


def _one_line(err: BaseException) -> str:
    """An error in one line (orbax's and tensorstore's are long)."""
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}"


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
        if keep < 1:
            raise ValueError(f"keep must be at least 1 checkpoint, got {keep}")
        self.directory = Path(directory).absolute()  # orbax needs absolute paths
        self._sums = self.directory / "checksums"
        try:
            self._sums.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"checkpoint folder {self.directory} is not writable ({err.strerror or err})") from None
        self.manager = ocp.CheckpointManager(  # synchronous saves: a failure raises here, no threads left waiting
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                                 enable_async_checkpointing=False))

    def check_writable(self) -> None:
        """Raises a one-line OSError unless files can be written in the folder and its checksums/."""
        for folder in (self.directory, self._sums):
            probe = folder / f".write-test-{os.getpid()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as err:
                raise OSError(f"checkpoint folder {folder} is not writable ({err.strerror or err})") from None

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves and waits until the step is on disk, then records its checksums.

        Multi-process: every process calls it (each writes its own shards to the shared
        directory); process 0 writes the checksums, and all return once they are written."""
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            extra=ocp.args.JsonSave(extra)), force=True)
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                step_dir = self.directory / str(step)
                tmp = self._sums / f".{step}.json.tmp"
                tmp.write_text(json.dumps(_digest(step_dir)))
                tmp.replace(self._sums / f"{step}.json")  # the commit: from here on the step is trusted
                kept = {str(s) for s in self.manager.all_steps()}
                for f in self._sums.glob("*.json"):
                    if f.stem.isdigit() and f.stem not in kept:
                        f.unlink()
        except OSError as err:
            raise OSError(f"could not save checkpoint step {step} in {self.directory} ({_one_line(err)})") from None
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"metareason checkpoint {step} summed")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _damage(self, step: int) -> str | None:
        """Why `step` cannot be trusted, or None."""
        manifest = self._sums / f"{step}.json"
        if not manifest.exists():
            return "no checksum file: saved but never verified (a crash before its checksums were written)"
        try:
            expected = json.loads(manifest.read_text())
            if not (isinstance(expected, dict) and expected
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in expected.items())):
                raise ValueError("not a JSON object of file name -> sha256")
        except (ValueError, UnicodeDecodeError, OSError) as err:
            return f"its checksum file {manifest.name} is unreadable ({_one_line(err)})"
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

    def _move_aside(self, step: int) -> Path:
        """Renames the damaged step folder `step` to damaged-STEP-N/ (N: the first free number) and
        its manifest to checksums/damaged-STEP-N.json; returns the new folder (process 0 moves, every
        process waits for it and rereads the steps)."""
        n = 0
        while (self.directory / f"damaged-{step}-{n}").exists():
            n += 1
        dest = self.directory / f"damaged-{step}-{n}"
        if jax.process_index() == 0:
            try:
                (self.directory / str(step)).rename(dest)
                if (self._sums / f"{step}.json").exists():
                    (self._sums / f"{step}.json").rename(self._sums / f"{dest.name}.json")
            except OSError as err:
                raise OSError(f"could not move damaged checkpoint step {step} aside to {dest} "
                              f"({err.strerror or err})") from None
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"metareason checkpoint {step} moved aside")
        self.manager.reload()
        return dest

    def restore(self, abstract: Any, step: int | None = None, *, partial: bool = False,
                move_aside: bool = False) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of checkpoint `step`, or of the newest intact one (`step` None; None if
        there is none; a damaged newer one is reported in one line and the previous one used).

        `abstract`: the state's structure as `jax.ShapeDtypeStruct`s (`jax.eval_shape`, `abstract_like`),
        with shardings to restore straight into them. `partial`: `abstract` is a dict naming some of the
        state's fields (e.g. {"params": ...}) and only those are read and returned. A named `step` that is
        absent raises FileNotFoundError, a damaged one CheckpointDamaged (each one line). `move_aside`:
        damaged steps newer than the one restored are renamed damaged-STEP-N/ (`_move_aside`); when
        none is intact, nothing is moved and CheckpointDamaged names them all."""
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
                    reason = _one_line(err)
            raise CheckpointDamaged(f"checkpoint step {step} in {self.directory} is damaged ({reason})")
        problems, damaged = [], []
        for s in reversed(steps):
            reason = self._agreed_damage(s)
            if reason is None:
                try:
                    restored = (s, *self._restore(s, abstract, partial))
                except Exception as err:
                    reason = _one_line(err)
                else:
                    for bad in damaged if move_aside else ():
                        dest = self._move_aside(bad)
                        print(f"warning: moved damaged checkpoint step {bad} aside to {dest} (kept, not deleted)",
                              flush=True)
                    return restored
            msg = f"checkpoint step {s} in {self.directory} is damaged ({reason})"
            log.warning("%s; trying an older one", msg)
            print(f"warning: {msg}; trying an older one", flush=True)
            problems.append(f"step {s}: {reason}")
            damaged.append(s)
        if steps:
            raise CheckpointDamaged(f"no intact checkpoint in {self.directory}: " + "; ".join(problems))
        return None

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of the newest intact checkpoint; None if there is none.

        `abstract_state`: the state's structure as `jax.ShapeDtypeStruct`s (`jax.eval_shape`).
        A damaged newest checkpoint is reported (logged, one line), the previous one used and the
        damaged one moved aside (a resumed run saves that step again)."""
        return self.restore(abstract_state, move_aside=True)

    def close(self) -> None:
        """Waits for a save in flight and releases orbax's resources (also after a failed save)."""
        try:
            self.manager.wait_until_finished()
        finally:
            self.manager.close()


def abstract_like(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s with the shapes, dtypes and shardings of `tree`'s arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
