"""GRPO: the clipped policy loss with a k3 KL and group advantages (`metareason.train.grpo.loss`),
and rollouts, sampled and laid out for training (`metareason.train.grpo.rollouts`). The run
command is `metareason.train.rl`."""

from metareason.train.grpo.loss import (ADVANTAGES, AGGREGATIONS, GRPOLossConfig, group_advantages, grpo_loss,
                                        token_logprobs, update_mask)
from metareason.train.grpo.rollouts import rollout_batch, sample_rollouts

__all__ = ["ADVANTAGES", "AGGREGATIONS", "GRPOLossConfig", "group_advantages", "grpo_loss", "token_logprobs",
           "update_mask", "rollout_batch", "sample_rollouts"]
