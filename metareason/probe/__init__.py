"""The inner loop measured: the answer loss along reasoning trajectories (the paper's probe) and
the analyses built on it (E1-E5, E12).

    batch = ProbeBatch(context, context_lengths, cuts, probe, targets)
    loss = answer_loss_along_trajectory(params, batch, config=config)   # loss.mean: [B, M]

`config` is our `ModelConfig` or any `metareason.model.CausalLM` (method="packed" for a model
other than ours); `answer_nll` is the traceable core (jit / grad / vmap), which the inner loops'
answer loss shares.
"""

from metareason.probe.loss import (METHODS, AnswerLoss, ProbeBatch, ProbeError, answer_loss_along_trajectory,
                                   answer_loss_per_prefix, answer_nll, model_logits)

__all__ = ["ProbeBatch", "AnswerLoss", "ProbeError", "METHODS", "answer_loss_along_trajectory",
           "answer_loss_per_prefix", "answer_nll", "model_logits"]
