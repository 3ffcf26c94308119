"""Reasoning data: the record schema, manual JSONL/parquet directories, tensorflow-datasets
builders written as ArrayRecord (read without TensorFlow), and grain training pipelines with
packing and checkpointable iterators.

    from metareason.data import ChampBuilder, build_and_load, training_batches
    sources = build_and_load(ChampBuilder(data_dir="/abs/data"))         # {"test": RecordSource}
    ds = training_batches(sources["test"], encode, seq_len=1024, batch_size=8, seed=0)
    it = iter(ds); batch = next(it); state = it.get_state()

Names resolve lazily: the builders and pipelines pull in tensorflow-datasets and grain, the
record schema and the manual reader (`metareason.data.manual`) do not.
"""

import importlib

# name -> submodule; resolved on first access (PEP 562) so that `metareason.data.manual` and
# `metareason.data.records` import without tensorflow-datasets or grain (the GPU image lacks them)
_WHERE = {
    "builders": ("ChampBuilder", "ManualBuilder", "ManualConfig", "RecordsBuilder", "RecordsConfig", "RecordSource",
                 "build_and_load", "load_prepared", "record_features"),
    "lab": ("LabBuilder", "build_lab"),
    "manual": ("ALIASES", "ManualRead", "RowProblem", "iter_records", "manual_splits", "read_manual_dir",
               "read_records"),
    "named": ("DatasetError", "NAMED", "champ_records", "is_lab_spec", "named_records"),
    "pipeline": ("BATCH_FIELDS", "encode_dataset", "pack_batches", "record_dataset", "training_batches"),
    "records": ("FIELDS", "TEXT_FIELDS", "DataError", "Record", "make_record", "normalize_record"),
}
_MODULE = {name: mod for mod, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE)


def __getattr__(name: str):
    if name in _MODULE:
        value = getattr(importlib.import_module(f"metareason.data.{_MODULE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metareason.data' has no attribute {name!r}")
