"""grain pipelines: seeded shuffling, packing (checked against an exact accounting), epochs, and
checkpointable iterators."""

import collections
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from metareason.data import (BATCH_FIELDS, DataError, RecordsBuilder, build_and_load, make_record, record_dataset,
                             training_batches)

tfds.disable_progress_bar()

S = 16  # sequence length of the packed rows


def _records(n, seed=0):
    """n records whose lengths (1..2S) are drawn with `seed`; the length rides in `difficulty`."""
    lengths = np.random.default_rng(seed).integers(1, 2 * S, size=n)
    return [make_record(id=f"r{i}", question=f"question {i}", answer=str(i), difficulty=int(k))
            for i, k in enumerate(lengths)]


def encode(record):
    """tokens 1000 * (i + 1) + j, so every token names its record; the prompt (first third) is
    not trained on."""
    i, n = int(record["id"][1:]), record["difficulty"]
    tokens = 1000 * (i + 1) + np.arange(n)
    mask = (np.arange(n) >= n // 3).astype(np.int32)
    return {"tokens": tokens, "loss_mask": mask}


def reference_sequences(records, seq_len=S):
    """The reference: what each record should become in the packed batches (truncated)."""
    out = {}
    for r in records:
        e = encode(r)
        out[r["id"]] = (e["tokens"][:seq_len], e["loss_mask"][:seq_len])
    return out


def unpack(batches):
    """Every packed sequence of `batches` as (record id, tokens, loss_mask), checking the row
    layout on the way: contiguous segments numbered 1..k from the row start, positions 0..n-1,
    padding only at the row end with zeros everywhere."""
    found = []
    for batch in batches:
        assert set(batch) == set(BATCH_FIELDS)
        for name in BATCH_FIELDS:
            assert batch[name].dtype == np.int32 and batch[name].shape[1] == S
        for tok, seg, pos, mask in zip(*(batch[k] for k in BATCH_FIELDS)):
            used = int((seg > 0).sum())
            assert (seg[used:] == 0).all() and (seg[:used] > 0).all()  # padding only at the end
            assert (tok[used:] == 0).all() and (pos[used:] == 0).all() and (mask[used:] == 0).all()
            starts = [0] + [j for j in range(1, used) if seg[j] != seg[j - 1]]
            assert list(seg[starts]) == list(range(1, len(starts) + 1))  # 1, 2, ... in row order
            for a, b in zip(starts, starts[1:] + [used]):
                assert (seg[a:b] == seg[a]).all()
                np.testing.assert_array_equal(pos[a:b], np.arange(b - a))
                owner = {int(t) // 1000 for t in tok[a:b]}
                assert len(owner) == 1  # one record per segment: no sequence crosses a segment
                found.append((f"r{owner.pop() - 1}", tok[a:b].copy(), mask[a:b].copy()))
    return found


def count_targets(batch):
    """The number of loss terms under the train loss's rule."""
    seg, mask = batch["segment_ids"], batch["loss_mask"]
    return int(((mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)).sum())


@pytest.mark.parametrize("batch_size,bins", [(4, None), (3, 7), (1, 1)])
def test_packing_accounts_for_every_token(batch_size, bins):
    records = _records(40)
    batches = list(training_batches(records, encode, seq_len=S, batch_size=batch_size, seed=3, num_epochs=1,
                                    num_packing_bins=bins, drop_remainder=False))
    found = unpack(batches)
    want = reference_sequences(records)
    assert sorted(i for i, _, _ in found) == sorted(want)  # each record exactly once, none crosses rows
    for rid, tokens, mask in found:
        np.testing.assert_array_equal(tokens, want[rid][0])
        np.testing.assert_array_equal(mask, want[rid][1])
    assert sum(int((b["segment_ids"] > 0).sum()) for b in batches) == sum(len(t) for t, _ in want.values())
    # the loss sees exactly each sequence's own targets after its first token
    assert sum(count_targets(b) for b in batches) == sum(int(m[1:].sum()) for _, m in want.values())
    assert any(len(want[r][0]) < len(encode(rr)["tokens"]) for r, rr in zip(want, records))  # some truncated


def test_too_long_drop_and_error():
    records = _records(30)
    long_ids = {r["id"] for r in records if r["difficulty"] > S}
    assert long_ids
    found = unpack(training_batches(records, encode, seq_len=S, batch_size=2, seed=0, num_epochs=1,
                                    too_long="drop", drop_remainder=False))
    assert sorted(i for i, _, _ in found) == sorted(r["id"] for r in records if r["id"] not in long_ids)
    with pytest.raises(DataError, match=r"record 'r\d+' encodes to \d+ tokens, more than seq_len=16"):
        list(training_batches(records, encode, seq_len=S, batch_size=2, seed=0, num_epochs=1, too_long="error"))


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in BATCH_FIELDS:
            np.testing.assert_array_equal(x[k], y[k])


def test_seed_determines_the_batches():
    records = _records(50)
    make = lambda seed: training_batches(records, encode, seq_len=S, batch_size=4, seed=seed, num_epochs=2)  # noqa: E731
    _same(list(make(0)), list(make(0)))
    a, b = list(make(0)), list(make(1))
    assert any(not np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, b))


def test_epochs_reshuffle_and_cover_every_record():
    records = _records(25)
    order = [r["id"] for r in record_dataset(records, seed=5, num_epochs=3)]
    epochs = [order[i * 25:(i + 1) * 25] for i in range(3)]
    assert all(sorted(e) == sorted(r["id"] for r in records) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert [r["id"] for r in record_dataset(records, shuffle=False)] == [r["id"] for r in records]
    found = unpack(training_batches(records, encode, seq_len=S, batch_size=2, seed=5, num_epochs=3,
                                    drop_remainder=False))
    assert collections.Counter(i for i, _, _ in found) == {r["id"]: 3 for r in records}
    forever = iter(training_batches(records, encode, seq_len=S, batch_size=2, seed=5, num_epochs=None))
    assert len(_take(forever, 100)) == 100  # more than 3 epochs' worth


@pytest.mark.parametrize("k", [0, 1, 5, 12])
def test_iterator_state_restores_an_identical_continuation(k):
    # 7 packing bins and batches of 3, so most saved states fall inside a packed group (the
    # packer's next_row > 0); an epoch of 30 records makes about 10 batches, so k = 12 restores
    # into the second epoch.
    records = _records(30, seed=1)
    ds = training_batches(records, encode, seq_len=S, batch_size=3, seed=11, num_epochs=4, num_packing_bins=7)
    it = iter(ds)
    _take(it, k)
    state = json.loads(json.dumps(it.get_state()))  # a small JSON-serialisable dict
    rest = _take(it, 15)
    fresh = iter(ds)
    fresh.set_state(state)
    _same(_take(fresh, 15), rest)
    # a pipeline rebuilt from scratch (as after a restart) continues the same way
    rebuilt = iter(training_batches(records, encode, seq_len=S, batch_size=3, seed=11, num_epochs=4,
                                    num_packing_bins=7))
    rebuilt.set_state(state)
    _same(_take(rebuilt, 15), rest)


@pytest.mark.parametrize("k", [0, 5])
def test_prefetched_batches_and_states_equal_the_plain_ones(k):
    """prefetch > 0 packs ahead in a thread: the same batches, and a state saved after k batches
    (while the thread is ahead) restores the continuation exactly, into either pipeline."""
    records = _records(30, seed=1)
    kw = dict(seq_len=S, batch_size=3, seed=11, num_epochs=4, num_packing_bins=7)
    plain, ahead = iter(training_batches(records, encode, **kw)), iter(training_batches(records, encode, **kw,
                                                                                        prefetch=2))
    _same(_take(ahead, k), _take(plain, k))
    state = json.loads(json.dumps(ahead.get_state()))
    assert state == json.loads(json.dumps(plain.get_state()))
    rest = _take(plain, 12)
    _same(_take(ahead, 12), rest)
    for prefetch in (0, 3):
        fresh = iter(training_batches(records, encode, **kw, prefetch=prefetch))
        fresh.set_state(state)
        _same(_take(fresh, 12), rest)
        fresh.close()
    ahead.close()
    with pytest.raises(DataError, match="prefetch must be an integer >= 0"):
        training_batches(records, encode, **kw, prefetch=-1)


class SmallBuilder(RecordsBuilder, skip_registration=True):
    SPLITS = ("train",)

    def _records(self, split):
        return _records(40, seed=2)


def test_pipeline_over_a_built_array_record_split(tmp_path):
    source = build_and_load(SmallBuilder(data_dir=tmp_path))["train"]
    ds = training_batches(source, encode, seq_len=S, batch_size=4, seed=0, num_epochs=2, drop_remainder=False)
    _same(list(ds), list(training_batches(_records(40, seed=2), encode, seq_len=S, batch_size=4, seed=0,
                                          num_epochs=2, drop_remainder=False)))
    it = iter(ds)
    _take(it, 3)
    state = it.get_state()
    rest = list(it)
    again = iter(ds)
    again.set_state(state)
    _same(list(again), rest)


@pytest.mark.parametrize("bad,pattern", [
    (lambda r: {"tokens": [1, 2]}, "encode must return a dict with 'tokens' and 'loss_mask'"),
    (lambda r: {"tokens": [1, 2], "loss_mask": [1]}, "tokens of length 2 but loss_mask of length 1 for record 'r0'"),
    (lambda r: {"tokens": [], "loss_mask": []}, "encode returned no tokens for record 'r0'"),
    (lambda r: {"tokens": [[1]], "loss_mask": [[1]]}, r"tokens of shape \(1, 1\)"),
    (lambda r: {"tokens": [1.5], "loss_mask": [1]}, "expected a 1-D integer array"),
    (lambda r: {"tokens": [1, 2], "loss_mask": [0, 2]}, "values other than 0 and 1"),
])
def test_bad_encode_output(bad, pattern):
    with pytest.raises(DataError, match=pattern) as e:
        next(iter(training_batches(_records(3), bad, seq_len=S, batch_size=1, seed=0, shuffle=False)))
    assert "\n" not in str(e.value)


def test_bad_arguments():
    records = _records(3)
    for kwargs, pattern in [({"seed": -1}, "seed must be"), ({"batch_size": 0}, "batch_size must be"),
                            ({"seq_len": 0}, "seq_len must be"), ({"num_epochs": 0}, "num_epochs must be"),
                            ({"too_long": "cut"}, "too_long must be")]:
        args = {"seq_len": S, "batch_size": 2, "seed": 0, **kwargs}
        with pytest.raises(DataError, match=pattern):
            training_batches(records, encode, **args)
    with pytest.raises(DataError, match="record source is empty"):
        training_batches([], encode, seq_len=S, batch_size=2, seed=0)
    with pytest.raises(DataError, match="shuffling needs a seed"):
        record_dataset(records)
