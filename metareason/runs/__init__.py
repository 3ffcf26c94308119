"""Run folders and the one model loader, below every consumer (probe, eval, the trainers).

    m = load("runs/my-run")                  # LoadedModel: kind, config, params, tokenizer, format, lab, step, ...
    m = load("runs/my-run", step=400)        # an earlier checkpoint
    m = load("path/to/hf-model")             # a Hugging Face folder

The run folder (`open_run_dir`, `copy_tokenizer`, `metareason.runs.folder`), its checkpoints
(`Checkpointer`: orbax steps with checksums, `metareason.runs.checkpoint`) and `load`
(`metareason.runs.load`); `export(run, hf_dir)` writes any of them as a Hugging Face folder
(`metareason.runs.export`). Trainer configs live above, in `metareason.train`: loading needs none.
"""

from metareason.runs.checkpoint import CheckpointDamaged, Checkpointer, abstract_like
from metareason.runs.export import ExportConfig, ExportError, export, run_export
from metareason.runs.folder import WEIGHT_FILES, copy_tokenizer, defaults_json, open_run_dir
from metareason.runs.load import LoadedModel, lab_config_from_json, load, restore_params, run_kind

__all__ = ["CheckpointDamaged", "Checkpointer", "abstract_like", "WEIGHT_FILES", "copy_tokenizer", "defaults_json",
           "open_run_dir", "LoadedModel", "lab_config_from_json", "load", "restore_params", "run_kind", "ExportConfig",
           "ExportError", "export", "run_export"]
