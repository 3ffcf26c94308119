"""How a model is prompted and judged: one `Format` (prompt, thinking prefix, end of thinking,
answer template, probe and SFT examples, answer extraction, verdict) for the probe, eval, GRPO,
SFT and the lab.

    from metareason.format import LabFormat, HFFormat
    fmt = LabFormat()                                      # or HFFormat(tokenizer, think_prefix="<think>\\n")
    fmt.prompt(record)                                     # list[int]
    fmt.verdict(generated_ids_or_text, record)             # Verdict(answer, correct, well_formed), .reward
    fmt.probe_example(question, trajectory, answer)        # Example (the probe's input)
    fmt.sft_example(record)                                # {"tokens", "loss_mask"}

`HFFormat` unescapes `think_prefix` once: "<think>\\n" typed on a command line (backslash, n)
is "<think>" and a newline, as the model's chat template writes it.

Modules: `protocol` (Format, ANSWER_TEMPLATE), `example` (Example), `lab` (LabFormat), `hf`
(HFFormat, unescape), `verdict` (Verdict, the paper's reward, lab_verdict, math_verdict), `extract`
(boxed_answer). Math-Verify is imported only when a math answer is judged.
"""

from metareason.format.example import Example, FormatError
from metareason.format.extract import boxed_answer, final_boxed
from metareason.format.hf import HFFormat, unescape
from metareason.format.lab import LabFormat
from metareason.format.protocol import ANSWER_TEMPLATE, END_THINK, Format
from metareason.format.verdict import REWARDS, Verdict, lab_verdict, math_equal, math_verdict, reward

__all__ = ["Format", "LabFormat", "HFFormat", "Example", "FormatError", "ANSWER_TEMPLATE", "END_THINK", "unescape",
           "Verdict", "REWARDS", "reward", "lab_verdict", "math_verdict", "math_equal", "boxed_answer",
           "final_boxed"]
