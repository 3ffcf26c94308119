"""tensorflow-datasets builders that write records (`metareason.data.records`) as ArrayRecord.

Build and read without TensorFlow:

    builder = ChampBuilder(data_dir="/abs/data")            # file_format="array_record" by default
    sources = build_and_load(builder)                         # {"test": RecordSource}, built once
    record = sources["test"][0]                               # a Record dict with str fields

`tfds.load` / `as_dataset` need TensorFlow and are not used; `build_and_load` calls
`builder.download_and_prepare()` (a no-op when the data is already on disk) and
`builder.as_data_source(split)` (what `tfds.data_source` does for registered names).

Writing your own builder
------------------------
Subclass `RecordsBuilder`; implement `_records(split)` and list the split names in `SPLITS`:

    class ToyBuilder(RecordsBuilder):
        '''Toy records.'''                                     # the DatasetInfo description
        VERSION = tfds.core.Version("1.0.0")                  # bump when the records change
        SPLITS = ("train", "test")

        def _records(self, split):                             # any iterable of record dicts
            for i in range(3):
                yield {"id": f"{split}-{i}", "question": "1+1?", "answer": "2"}

Parameters (seed, sizes, ...) go in a `RecordsConfig` whose name encodes them, so each set of
parameters is stored in its own directory `data_dir/<builder name>/<config name>/<version>/`
and never reuses another's files. `RecordsConfig.of(params)` names the config by a hash of
`repr(params)` (use a frozen dataclass or a tuple with a stable repr):

    class LabBuilder(RecordsBuilder):
        VERSION = tfds.core.Version("1.0.0")
        SPLITS = ("train", "validation", "test", "heldout")

        def _records(self, split):
            return lab_records(self.params, split)             # self.params is config.params

    builder = LabBuilder(data_dir=data_dir, config=RecordsConfig.of(LabConfig(seed=1), prefix="lab"))
    # or, naming it yourself: config=RecordsConfig(name=f"lab_{cfg.fingerprint()}", params=cfg)
    sources = build_and_load(builder)

Without a config, the data goes to `data_dir/<builder name>/<version>/` and `self.params` is None.

Details:
- The builder's on-disk name is its class name in snake case (`LabBuilder` -> "lab_builder");
  set a class attribute `name = "..."` to choose another. tensorflow-datasets registers every
  concrete builder class by that name and refuses a second class with the same name; define the
  class once at module level, or pass `skip_registration=True`
  (`class ToyBuilder(RecordsBuilder, skip_registration=True)`) for throwaway classes (tests).
- Splits whose `_records` yields nothing are left out (tensorflow-datasets cannot store an empty
  split); `build_and_load` returns only the splits that exist. Override `_split_names()` for
  data-dependent split names.
- Records keep the order `_records` yields them (tfds shuffling is disabled): index i of a split
  is its i-th record. Every record is validated with `normalize_record`; a duplicate id within a
  split is a `DataError`.
- Change VERSION (or the config's params) whenever `_records` would produce different records:
  an existing directory for (name, config, version) is reused as it is.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import itertools
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from metareason.data.manual import RowProblem, iter_records, manual_splits
from metareason.data.records import DataError, Record, TEXT_FIELDS, normalize_record
from metareason.data.named import champ_records

__all__ = ["RecordsBuilder", "RecordsConfig", "ChampBuilder", "ManualBuilder", "ManualConfig", "RecordSource",
           "build_and_load", "load_prepared", "record_features"]

log = logging.getLogger(__name__)


class _QuietConfigWarning(logging.Filter):
    """Drops tfds's absl warning "Using custom data configuration: ..." (every local builder uses a
    custom config by design: its parameters name it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_QuietConfigWarning())


def record_features(optional: Sequence[str] = ()) -> tfds.features.FeaturesDict:
    """The tfds features of a record: Text per text field, a Sequence of Text for generations,
    int64 difficulty, and Text per `optional` field (stored "" when absent)."""
    spec: dict[str, Any] = {name: tfds.features.Text() for name in (*TEXT_FIELDS, *optional)}
    spec["generations"] = tfds.features.Sequence(tfds.features.Text())
    spec["difficulty"] = tfds.features.Scalar(np.int64)
    return tfds.features.FeaturesDict(spec)


@dataclasses.dataclass(eq=False)
class RecordsConfig(tfds.core.BuilderConfig):
    """A builder config carrying arbitrary parameters (`params`) for `RecordsBuilder._records`.

    The config's `name` names the on-disk directory; `RecordsConfig.of` derives it from params.
    """

    params: Any = None

    @classmethod
    def of(cls, params: Any, *, prefix: str = "cfg", **kwargs: Any) -> "RecordsConfig":
        """A config named `<prefix>_<10 hex digits of sha256(repr(params))>`."""
        digest = hashlib.sha256(repr(params).encode()).hexdigest()[:10]
        return cls(name=f"{_slug(prefix)}_{digest}", params=params, description=repr(params)[:1000], **kwargs)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "cfg"


class RecordsBuilder(tfds.core.GeneratorBasedBuilder):
    """Base builder: records (see `metareason.data.records`) per split, stored as ArrayRecord.

    Subclasses set `VERSION` and `SPLITS` and implement `_records(split)`; see the module
    docstring for a complete example and for passing parameters through `RecordsConfig`.
    """

    VERSION = tfds.core.Version("1.0.0")
    SPLITS: tuple[str, ...] = ()
    """The split names to build (in this order)."""
    OPTIONAL: tuple[str, ...] = ()
    """Optional record fields (`metareason.data.records.OPTIONAL_FIELDS`) this builder stores."""

    def __init__(self, *, data_dir: str | Path | None = None, config: str | tfds.core.BuilderConfig | None = None,
                 file_format: str = "array_record", **kwargs: Any):
        """data_dir: where `<name>/<config>/<version>/` is written (default: ~/tensorflow_datasets).
        config: a `RecordsConfig` (or a config name from BUILDER_CONFIGS).
        file_format: "array_record" (random access, readable without TensorFlow)."""
        super().__init__(data_dir=None if data_dir is None else str(data_dir), config=config,
                         file_format=file_format, **kwargs)

    def _log_download_bytes(self) -> None:
        """tfds prints "Downloading and preparing dataset ..." here; a local build downloads nothing."""
        log.info("building %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        log.info("built %s in %s", self.name, self.data_dir)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> Any:
        """The file defining the class. (tensorflow-datasets' own version needs the
        `importlib_resources` backport for classes defined in packages.)"""
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None

    @property
    def params(self) -> Any:
        """`self.builder_config.params` (None without a RecordsConfig)."""
        return getattr(self.builder_config, "params", None)

    @abc.abstractmethod
    def _records(self, split: str) -> Iterable[Mapping[str, Any]]:
        """The records of `split`, each a mapping with the record fields (optional ones may be
        left out)."""

    def _split_names(self) -> Sequence[str]:
        """The splits to build; `SPLITS` unless overridden."""
        if not self.SPLITS:
            raise DataError(f"{type(self).__name__}: set SPLITS (the split names) or override _split_names()")
        return tuple(self.SPLITS)

    def _info(self) -> tfds.core.DatasetInfo:
        doc = (type(self).__doc__ or self.name).strip()
        return tfds.core.DatasetInfo(builder=self, description=doc, features=record_features(self.OPTIONAL),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, Record]]]:
        del dl_manager
        generators = {}
        for split in self._split_names():
            records = iter(self._records(split))
            first = next(records, None)
            if first is None:
                log.info("%s: split %r is empty, left out", self.name, split)
                continue
            generators[split] = self._generate_examples(split, itertools.chain([first], records))
        if not generators:
            raise DataError(f"{self.name}: every split is empty ({', '.join(self._split_names())})")
        return generators

    def _generate_examples(self, split: str, records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, Record]]:
        seen: set[str] = set()
        for index, raw in enumerate(records):
            record = normalize_record(raw, where=f"{self.name} split {split!r} record {index}")
            if record["id"] in seen:
                raise DataError(f"{self.name} split {split!r}: duplicate id {record['id']!r}")
            seen.add(record["id"])
            yield index, {**record, **{name: record.get(name, "") for name in self.OPTIONAL}}


class RecordSource:
    """Random access to one built split: `len(source)`, `source[i] -> Record` (str fields).

    Wraps the tfds ArrayRecord data source (`.source`), decoding its bytes with
    `normalize_record`. Usable as a grain data source (`grain.MapDataset.source(source)`).
    """

    def __init__(self, source: Any, split: str = ""):
        self.source = source
        self.split = split

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Record:
        n = len(self.source)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"record index {index} out of range for split {self.split!r} of {n} records")
        return normalize_record(self.source[index % n])

    def __getitems__(self, indices: Sequence[int]) -> list[Record]:
        return [normalize_record(r) for r in self.source.__getitems__([int(i) for i in indices])]

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordSource(split={self.split!r}, records={len(self)})"


def build_and_load(builder: tfds.core.DatasetBuilder) -> dict[str, RecordSource]:
    """Build `builder` unless its data is on disk already, then split -> `RecordSource`.

    The builder must use a random-access file format (array_record, the RecordsBuilder default).
    Progress bars: `tfds.display_progress_bar(False)` turns them off.
    """
    builder.download_and_prepare()
    return {split: RecordSource(builder.as_data_source(split), split) for split in builder.info.splits}


def load_prepared(dataset_dir: str | Path) -> dict[str, RecordSource]:
    """split -> `RecordSource` of an already built dataset directory
    (`data_dir/<name>/<config>/<version>`), without its builder class (e.g. on another machine)."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset_info.json").is_file():
        raise DataError(f"{str(dataset_dir)!r} is not a built dataset directory (no dataset_info.json)")
    builder = tfds.builder_from_directory(str(dataset_dir))
    return {split: RecordSource(builder.as_data_source(split), split) for split in builder.info.splits}


# ---------------------------------------------------------------------------------------------
# CHAMP: 270 competition-math problems with answers and step-by-step solutions (champ-dataset).


class ChampBuilder(RecordsBuilder):
    """CHAMP (Mao et al. 2024, "CHAMP: A Competition-level Dataset for Fine-Grained Analyses of
    LLMs' Mathematical Reasoning Capabilities"): 270 competition-math problems in 5 categories,
    each with a final answer and a human-written step-by-step solution. Read offline from the
    champ-dataset package (v0.json). Records: id = CHAMP identifier (e.g. "P_Combinatorics_1"),
    source "champ", family = category ("Combinatorics", "Inequality", "Number-Theory",
    "Polynomial", "Sequence"), trajectory = the solution steps, one per line, style "reference",
    generations [] (the package's model outputs are not filtered for correctness), difficulty -1.
    One split, "test"."""

    name = "metareason_champ"
    VERSION = tfds.core.Version("1.0.0")
    SPLITS = ("test",)

    def _records(self, split: str) -> Iterator[dict[str, Any]]:
        return champ_records()


# ---------------------------------------------------------------------------------------------
# Manual directories (metareason.data.manual).


@dataclasses.dataclass(eq=False)
class ManualConfig(tfds.core.BuilderConfig):
    """Which manual directory to read and how (made by `ManualBuilder`)."""

    manual_dir: str = ""
    source: str | None = None
    skip_bad: bool = False


def _manual_fingerprint(directory: Path, source: str | None, skip_bad: bool) -> str:
    """A hash of the directory's data files (name, size, modification time) and the options."""
    parts = [repr((source, skip_bad))]
    for split, paths in manual_splits(directory).items():
        for path in paths:
            stat = path.stat()
            parts.append(f"{split}/{path.name}/{stat.st_size}/{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


class ManualBuilder(RecordsBuilder):
    """Records read from a manual directory of JSONL / parquet files (`metareason.data.manual`):
    one split per `<split>.jsonl|parquet` (or `<split>-*.jsonl|parquet` shards)."""

    name = "metareason_manual"
    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, manual_dir: str | Path, *, data_dir: str | Path | None = None, source: str | None = None,
                 skip_bad: bool = False, config_name: str | None = None, **kwargs: Any):
        """manual_dir: the directory with the files.
        source: the `source` of rows without one (default: the directory's name).
        skip_bad: skip bad rows (logged as warnings) instead of failing the build.
        config_name: the on-disk config name; default `<directory name>_<hash of the files'
        names, sizes and modification times and of the options>`, so changed files are rebuilt.
        A fixed config_name reuses whatever was built under it."""
        directory = Path(manual_dir).resolve()
        if config_name is None:
            config_name = f"{_slug(directory.name)}_{_manual_fingerprint(directory, source, skip_bad)}"
        config = ManualConfig(name=config_name, manual_dir=str(directory), source=source, skip_bad=skip_bad,
                              description=f"manual directory {directory}")
        super().__init__(data_dir=data_dir, config=config, **kwargs)

    def _split_names(self) -> Sequence[str]:
        return tuple(manual_splits(self.builder_config.manual_dir))

    def _records(self, split: str) -> Iterator[Record]:
        """The split's files, streamed one row at a time (memory: one parquet batch)."""
        cfg = self.builder_config
        source = Path(cfg.manual_dir).name if cfg.source is None else cfg.source
        problems: list[RowProblem] = []
        for path in manual_splits(cfg.manual_dir)[split]:
            yield from iter_records(path, source=source, problems=problems if cfg.skip_bad else None)
        if problems:
            log.warning("%s: skipped %d bad rows in split %r, first: %s", self.name, len(problems), split,
                        problems[0])
