"""Run folders and the one model loader, below every consumer (probe, eval, the trainers).

    m = load("runs/my-run")                  # LoadedModel: kind, config, params, tokenizer, format, lab, step, ...
    m = load("runs/my-run", step=400)        # an earlier checkpoint
    m = load("path/to/hf-model")             # a Hugging Face folder

Every output folder records what produced it in provenance.json and is opened through one gate
(`open_output`, `fingerprint`, `metareason.runs.provenance`). The run folder (`open_run_dir`,
`copy_tokenizer`, `metareason.runs.folder`), its checkpoints
(`Checkpointer`: orbax steps with checksums, `metareason.runs.checkpoint`) and `load`
(`metareason.runs.load`); `export(run, hf_dir)` writes any of them as a Hugging Face folder
(`metareason.runs.export`). Trainer configs live above, in `metareason.train`: loading needs none.
"""

from metareason.runs.checkpoint import CheckpointDamaged, Checkpointer, abstract_like
from metareason.runs.export import ExportConfig, ExportError, export, run_export
from metareason.runs.folder import WEIGHT_FILES, copy_tokenizer, defaults_json, open_run_dir, run_differences
from metareason.runs.load import LoadedModel, lab_config_from_json, load, restore_params, run_kind
from metareason.runs.provenance import (ProvenanceError, data_identity, fingerprint, model_identity, move_aside,
                                        open_output)

__all__ = ["CheckpointDamaged", "Checkpointer", "abstract_like", "WEIGHT_FILES", "copy_tokenizer", "defaults_json",
           "open_run_dir", "run_differences", "LoadedModel", "lab_config_from_json", "load", "restore_params",
           "run_kind", "ProvenanceError", "data_identity", "fingerprint", "model_identity", "move_aside", "open_output",
           "ExportConfig", "ExportError", "export", "run_export"]
