"""Reasoning data: the record schema, manual JSONL/parquet directories, tensorflow-datasets
builders written as ArrayRecord (read without TensorFlow), and grain training pipelines with
packing and checkpointable iterators.

    from metareason.data import ChampBuilder, build_and_load, training_batches
    sources = build_and_load(ChampBuilder(data_dir="/abs/data"))         # {"test": RecordSource}
    ds = training_batches(sources["test"], encode, seq_len=1024, batch_size=8, seed=0)
    it = iter(ds); batch = next(it); state = it.get_state()

Imported explicitly only (it pulls in tensorflow-datasets and grain; `import metareason` does not).
"""

from metareason.data.builders import (ChampBuilder, ManualBuilder, ManualConfig, RecordsBuilder, RecordsConfig,
                                      RecordSource, build_and_load, load_prepared, record_features)
from metareason.data.lab import LabBuilder, build_lab
from metareason.data.manual import (ALIASES, ManualRead, RowProblem, iter_records, manual_splits, read_manual_dir,
                                    read_records)
from metareason.data.pipeline import (BATCH_FIELDS, encode_dataset, pack_batches, record_dataset,
                                      training_batches)
from metareason.data.records import FIELDS, TEXT_FIELDS, DataError, Record, make_record, normalize_record

__all__ = [
    "DataError", "Record", "FIELDS", "TEXT_FIELDS", "make_record", "normalize_record",
    "ALIASES", "ManualRead", "RowProblem", "iter_records", "read_records", "read_manual_dir", "manual_splits",
    "RecordsBuilder", "RecordsConfig", "ChampBuilder", "ManualBuilder", "ManualConfig", "RecordSource",
    "build_and_load", "load_prepared", "record_features", "LabBuilder", "build_lab",
    "BATCH_FIELDS", "record_dataset", "encode_dataset", "pack_batches", "training_batches",
]
