"""The synthetic lab as a tensorflow-datasets builder (ArrayRecord), one config per `LabConfig`."""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from metareason.data.builders import RecordsBuilder, RecordsConfig, RecordSource, build_and_load
from metareason.tasks.lab import SPLITS, LabConfig, lab_records

__all__ = ["LabBuilder", "build_lab"]


class LabBuilder(RecordsBuilder):
    """Synthetic reasoning lab: programmatically solved questions with trajectories of one style."""

    name = "metareason_lab"
    VERSION = tfds.core.Version("1.1.0")  # bump whenever lab_records would write different records
    OPTIONAL = ("mode",)  # 1.1.0: the prompt's mode marker (two-mode lab, LabConfig.mode / mix)
    SPLITS = SPLITS

    def _records(self, split):
        return lab_records(self.params, split)


def build_lab(config: LabConfig, data_dir: str | Path) -> dict[str, RecordSource]:
    """Builds the lab for `config` under `data_dir` (once; reused afterwards) and returns
    split -> `RecordSource` (the "heldout" split only when there are held-out families)."""
    builder = LabBuilder(data_dir=Path(data_dir).absolute(), config=RecordsConfig.of(config, prefix="lab"))
    tfds.display_progress_bar(False)
    return build_and_load(builder)
