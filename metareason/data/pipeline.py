"""grain pipelines: records -> seeded shuffle -> encode -> pack into fixed-length rows -> batches.

    ds = training_batches(sources["train"], encode, seq_len=512, batch_size=8, seed=0, num_epochs=None)
    it = iter(ds)                       # a grain DatasetIterator
    batch = next(it)                    # dict of int32[8, 512]: tokens, segment_ids, positions, loss_mask
    state = it.get_state()              # a small JSON-serialisable dict (json.dumps works)
    it2 = iter(ds); it2.set_state(state)  # continues exactly where `it` was

Batch fields, each int32[B, S]:
    tokens       token ids; 0 in padding
    segment_ids  1, 2, ... per packed sequence within a row (restarting in every row); 0 = padding
    positions    0, 1, ... within each packed sequence; 0 in padding
    loss_mask    1 where the token at this position is a training target (copied from
                 `encode`), 0 elsewhere and in padding. The train loss predicts tokens[:, 1:] from
                 logits[:, :-1] where segment_ids[:, 1:] == segment_ids[:, :-1] > 0 and
                 loss_mask[:, 1:] == 1, so the first token of each sequence is never a target.

Everything runs in the calling process (grain's dataset API, no worker processes: the
equivalent of `worker_count=0`). The iterator state is grain's own: indices into the shuffled,
repeated record stream plus the packer's position, so restoring it re-reads the records it needs.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import grain
import numpy as np

from metareason.data.builders import RecordSource
from metareason.data.records import DataError, Record, normalize_record

__all__ = ["Encoded", "record_dataset", "encode_dataset", "pack_batches", "training_batches", "BATCH_FIELDS"]

BATCH_FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")
"""The fields of a packed batch, each int32[batch, seq]."""

Encoded = Mapping[str, Any]
"""What `encode(record)` returns: {"tokens": int[n], "loss_mask": int[n] of 0/1}, n >= 1."""

TooLong = Literal["truncate", "drop", "error"]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32 - 1:
        raise DataError(f"seed must be an integer in [0, 2**32 - 1), got {seed!r}")
    return int(seed)


def record_dataset(source: Sequence[Any], *, seed: int | None = None, shuffle: bool = True,
                   num_epochs: int | None = 1) -> grain.MapDataset:
    """Records of a random-access source, shuffled afresh in every epoch, repeated.

    source: anything with `len` and `[i]` that gives record dicts (a `RecordSource`, a tfds data
    source whose bytes are decoded here, or a list of records).
    seed: the shuffle seed (required when shuffle); epoch e uses the permutation of seed + e.
    num_epochs: epochs to repeat (None: forever).
    Returns a `grain.MapDataset` of `Record`s, of length num_epochs * len(source).
    """
    if len(source) == 0:
        raise DataError("record source is empty")
    if num_epochs is not None and (isinstance(num_epochs, bool) or int(num_epochs) < 1):
        raise DataError(f"num_epochs must be >= 1 or None (forever), got {num_epochs!r}")
    ds = grain.MapDataset.source(source)
    if not isinstance(source, RecordSource):
        ds = ds.map(normalize_record)
    if shuffle:
        if seed is None:
            raise DataError("shuffling needs a seed (pass seed=..., or shuffle=False)")
        ds = ds.shuffle(seed=_check_seed(seed))
    return ds.repeat(num_epochs)


class _Encode:
    """encode(record) checked, converted to int32 and fitted to seq_len (a picklable callable)."""

    def __init__(self, encode: Callable[[Record], Encoded], seq_len: int, too_long: TooLong):
        self.encode, self.seq_len, self.too_long = encode, seq_len, too_long

    def __call__(self, record: Record) -> dict[str, np.ndarray] | None:
        rid = record.get("id", "?") if isinstance(record, Mapping) else "?"
        out = self.encode(record)
        if not isinstance(out, Mapping) or "tokens" not in out or "loss_mask" not in out:
            raise DataError(f"encode must return a dict with 'tokens' and 'loss_mask' (record {rid!r})")
        tokens, mask = np.asarray(out["tokens"]), np.asarray(out["loss_mask"])
        if tokens.size == 0 and mask.size == 0:
            raise DataError(f"encode returned no tokens for record {rid!r}")
        for name, arr in (("tokens", tokens), ("loss_mask", mask)):
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
                raise DataError(f"encode returned {name} of shape {arr.shape} and dtype {arr.dtype} for record "
                                f"{rid!r}; expected a 1-D integer array")
        if tokens.shape != mask.shape:
            raise DataError(f"encode returned tokens of length {len(tokens)} but loss_mask of length {len(mask)} "
                            f"for record {rid!r}")
        if not np.isin(mask, (0, 1)).all():
            raise DataError(f"encode returned a loss_mask with values other than 0 and 1 for record {rid!r}")
        if len(tokens) > self.seq_len:
            if self.too_long == "error":
                raise DataError(f"record {rid!r} encodes to {len(tokens)} tokens, more than seq_len={self.seq_len}")
            if self.too_long == "drop":
                return None
            tokens, mask = tokens[:self.seq_len], mask[:self.seq_len]
        return {"tokens": tokens.astype(np.int32), "loss_mask": mask.astype(np.int32)}


def encode_dataset(records: grain.MapDataset, encode: Callable[[Record], Encoded], *, seq_len: int,
                   too_long: TooLong = "truncate") -> grain.MapDataset:
    """`encode` applied to every record, checked and fitted to `seq_len`.

    encode(record) -> {"tokens": int[n], "loss_mask": int[n]} with n >= 1 and loss_mask in {0, 1}.
    too_long, for n > seq_len: "truncate" keeps the first seq_len tokens (the end of a long
    trajectory and its answer are then lost: pick seq_len to fit, or "drop"); "drop" leaves
    the record out; "error" raises a `DataError` naming the record.
    Returns a MapDataset of {"tokens": int32[n'], "loss_mask": int32[n']} (None for dropped
    records; iteration skips them).
    """
    if too_long not in ("truncate", "drop", "error"):
        raise DataError(f"too_long must be 'truncate', 'drop' or 'error', got {too_long!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise DataError(f"seq_len must be a positive integer, got {seq_len!r}")
    ds = records.map(_Encode(encode, int(seq_len), too_long))
    return ds.filter(lambda x: x is not None) if too_long == "drop" else ds


def _rename(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": row["tokens"], "segment_ids": row["tokens_segment_ids"],
            "positions": row["tokens_positions"], "loss_mask": row["loss_mask"]}


def pack_batches(encoded: grain.MapDataset | grain.IterDataset, *, seq_len: int, batch_size: int, seed: int,
                 num_packing_bins: int | None = None, drop_remainder: bool = True,
                 read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
    """Pack encoded sequences into rows of `seq_len` tokens and batch the rows.

    First-fit packing (`grain.experimental.FirstFitPackIterDataset`): sequences, in stream
    order, go to the first of `num_packing_bins` rows (default: batch_size) with room; when one
    fits nowhere, the rows are emitted in a seeded random order and packing restarts. A
    sequence never crosses rows; rows may hold sequences of adjacent epochs.
    drop_remainder: drop a last, partial batch (keeps every batch int32[batch_size, seq_len]).
    Returns an IterDataset of dicts of int32[batch_size, seq_len] (`BATCH_FIELDS`).
    """
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    bins = batch_size if num_packing_bins is None else num_packing_bins
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise DataError(f"num_packing_bins must be a positive integer, got {num_packing_bins!r}")
    if isinstance(encoded, grain.MapDataset):
        encoded = encoded.to_iter_dataset(read_options) if read_options else encoded.to_iter_dataset()
    packed = grain.experimental.FirstFitPackIterDataset(
        encoded, length_struct={"tokens": int(seq_len), "loss_mask": int(seq_len)}, num_packing_bins=int(bins),
        seed=_check_seed(seed), shuffle_bins=True)
    return packed.map(_rename).batch(int(batch_size), drop_remainder=drop_remainder)


def training_batches(source: Sequence[Any], encode: Callable[[Record], Encoded], *, seq_len: int,
                     batch_size: int, seed: int, num_epochs: int | None = None, shuffle: bool = True,
                     too_long: TooLong = "truncate", num_packing_bins: int | None = None,
                     drop_remainder: bool = True, read_options: grain.ReadOptions | None = None,
                     prefetch: int = 0) -> grain.IterDataset:
    """The whole pipeline: `record_dataset` -> `encode_dataset` -> `pack_batches`.

    source: random-access records (a `RecordSource` from `build_and_load`, or a list of records).
    encode: record -> {"tokens": int[n], "loss_mask": int[n]}.
    seed: seeds the record shuffle (seed + epoch per epoch) and the packed-row order.
    num_epochs: passes over the records (None: forever).
    prefetch: batches prepared ahead in a background thread (grain's `ThreadPrefetchIterDataset`),
    so packing overlaps the train step; 0: none. The iterator state still names the next batch the
    caller will get, so resuming is exact either way.
    Returns an IterDataset of dicts of int32[batch_size, seq_len] (see the module docstring);
    `iter()` of it gives a checkpointable `grain.DatasetIterator` (`get_state` / `set_state`).
    """
    records = record_dataset(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    encoded = encode_dataset(records, encode, seq_len=seq_len, too_long=too_long)
    batches = pack_batches(encoded, seq_len=seq_len, batch_size=batch_size, seed=seed,
                           num_packing_bins=num_packing_bins, drop_remainder=drop_remainder, read_options=read_options)
    if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
        raise DataError(f"prefetch must be an integer >= 0, got {prefetch!r}")
    return grain.experimental.ThreadPrefetchIterDataset(batches, prefetch_buffer_size=int(prefetch)) if prefetch \
        else batches
