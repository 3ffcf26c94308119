"""Evaluation: Pass@k / mG-Pass@k, and (re-exported from `metareason.format`, where they live)
answer extraction, the paper's reward and the verifiers.

    from metareason.evaluate import pass_at_k, mg_pass_at_k, math_verdict
    pass_at_k(n=16, c=5, k=8)                       # unbiased, from 16 samples of which 5 correct
    math_verdict(r"... \\boxed{\\frac12}", "0.5")     # Verdict(answer, correct=True, well_formed=True)

`metareason eval` (`metareason.evaluate.run`) samples n answers per question and writes the
per-dataset table. Math-Verify is imported only when a math answer is judged.
"""

from metareason.evaluate.passk import PassKError, correct_counts, g_pass_at_k, mg_pass_at_k, pass_at_k
from metareason.format import (REWARDS, Format, HFFormat, LabFormat, Verdict, boxed_answer, lab_verdict, math_equal,
                               math_verdict, reward)

__all__ = ["boxed_answer", "Format", "HFFormat", "LabFormat", "PassKError", "correct_counts", "g_pass_at_k",
           "mg_pass_at_k", "pass_at_k", "REWARDS", "Verdict", "lab_verdict", "math_equal", "math_verdict", "reward"]
