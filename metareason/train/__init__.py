"""Outer loops. SFT: loss on packed batches, an AdamW train state, a NaN-guarded jitted step,
metrics (JSONL + TensorBoard), greedy lab evaluation, and the `metareason train` run (`SFTConfig`,
`train_sft`: the lab, or a file of generations for a Hugging Face model). GRPO: group advantages,
the update mask, the clipped policy loss with a k3 KL and the rollouts (`metareason.train.grpo`),
and the `metareason rl` run (`GRPOConfig`, `train_grpo`). Both runs go through one loop
(`metareason.train.loop.run_loop`: resume, checkpoints, metrics, divergence, evaluation, progress).
Run folders and checkpoints are `metareason.runs` (re-exported here); model presets are
`metareason.model.presets`.

Importing this package does not import tensorflow-datasets or grain (`train_sft` does, when run)."""

from metareason.model.presets import MODEL_PRESETS, model_preset
from metareason.runs import CheckpointDamaged, Checkpointer, abstract_like
from metareason.train.evaluation import lab_accuracy
from metareason.train.grpo import (GRPOLossConfig, group_advantages, grpo_loss, rollout_batch, sample_rollouts,
                                   token_logprobs, update_mask)
from metareason.train.loop import TrainingDiverged, resume, run_loop
from metareason.train.loss import next_token_loss, sft_loss
from metareason.train.metrics import MetricsWriter
from metareason.train.options import RunOptions
from metareason.train.presets import rl_presets, train_presets
from metareason.train.rl import GRPOConfig, train_grpo
from metareason.train.saved import load_grpo_run, load_run
from metareason.train.sft import SFTConfig, sft_config_from_json, train_sft
from metareason.train.state import OptimizerConfig, TrainState, init_state, make_optimizer
from metareason.train.step import make_eval_loss, make_train_step
from metareason.train.trajectories import question_schedule, trajectory_slots

__all__ = ["CheckpointDamaged", "Checkpointer", "abstract_like", "lab_accuracy", "next_token_loss", "sft_loss",
           "MetricsWriter", "MODEL_PRESETS", "model_preset", "train_presets", "SFTConfig", "TrainingDiverged",
           "train_sft", "load_run", "sft_config_from_json", "OptimizerConfig", "TrainState", "init_state", "make_optimizer", "make_eval_loss",
           "make_train_step", "trajectory_slots", "question_schedule", "GRPOLossConfig", "group_advantages",
           "grpo_loss", "token_logprobs", "update_mask", "rl_presets", "GRPOConfig", "load_grpo_run", "train_grpo",
           "RunOptions", "resume", "run_loop", "rollout_batch", "sample_rollouts"]
