"""Outer loops. SFT: loss on packed batches, an AdamW train state, a NaN-guarded jitted step,
orbax checkpoints with checksums, metrics (JSONL + TensorBoard), greedy lab evaluation, and
the `metareason train` run (`SFTConfig`, `train_sft`: the lab, or a file of generations for a
Hugging Face model). GRPO: group advantages, the update mask,
the clipped policy loss with a k3 KL (`metareason.train.grpo`), and the `metareason rl` run
(`GRPOConfig`, `train_grpo`).

Importing this package does not import tensorflow-datasets or grain (`train_sft` does, when run)."""

from metareason.train.checkpoint import CheckpointDamaged, Checkpointer, abstract_like
from metareason.train.evaluation import lab_accuracy
from metareason.train.grpo import GRPOLossConfig, group_advantages, grpo_loss, token_logprobs, update_mask
from metareason.train.loss import next_token_loss, sft_loss
from metareason.train.metrics import MetricsWriter
from metareason.train.presets import MODEL_PRESETS, model_preset, rl_presets, train_presets
from metareason.train.rl import GRPOConfig, load_grpo_run, train_grpo
from metareason.train.sft import SFTConfig, TrainingDiverged, load_run, sft_config_from_json, train_sft
from metareason.train.state import OptimizerConfig, TrainState, init_state, make_optimizer
from metareason.train.step import make_eval_loss, make_train_step
from metareason.train.trajectories import question_schedule, trajectory_slots

__all__ = ["CheckpointDamaged", "Checkpointer", "abstract_like", "lab_accuracy", "next_token_loss", "sft_loss",
           "MetricsWriter", "MODEL_PRESETS", "model_preset", "train_presets", "SFTConfig", "TrainingDiverged",
           "train_sft", "load_run", "sft_config_from_json", "OptimizerConfig", "TrainState", "init_state", "make_optimizer", "make_eval_loss",
           "make_train_step", "trajectory_slots", "question_schedule", "GRPOLossConfig", "group_advantages",
           "grpo_loss", "token_logprobs", "update_mask", "rl_presets", "GRPOConfig", "load_grpo_run", "train_grpo"]
