"""The inner loop measured: the answer loss along reasoning trajectories (the paper's probe) and
the analyses built on it (E1-E5, E12).

    batch = ProbeBatch(context, context_lengths, cuts, probe, targets)
    loss = answer_loss_along_trajectory(params, batch, config=config)   # loss.mean: [B, M]
"""

from metareason.probe.loss import (METHODS, AnswerLoss, ProbeBatch, ProbeError, answer_loss_along_trajectory,
                                   answer_loss_per_prefix)

__all__ = ["ProbeBatch", "AnswerLoss", "ProbeError", "METHODS", "answer_loss_along_trajectory",
           "answer_loss_per_prefix"]
