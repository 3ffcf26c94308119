"""The `Format` protocol: how a model is prompted and judged, one object per model kind.

    fmt = LabFormat()                                    # or HFFormat(HFTokenizer.from_dir(d), think_prefix=...)
    ids = fmt.prompt(record)                             # list[int]: what the model continues (eval, GRPO)
    v = fmt.verdict(generated_ids_or_text, record)       # Verdict(answer, correct, well_formed)
    ex = fmt.probe_example(question, trajectory, answer) # Example: the probe's input (metareason.probe)
    sft = fmt.sft_example(record)                        # {"tokens", "loss_mask"}: one SFT sequence

Every model sees the same layout (the paper's, Algorithm 3):

    prompt (question, then the start of thinking) | trajectory | end of thinking | answer template | answer

`ANSWER_TEMPLATE` is the paper's answer template; the lab vocabulary holds it as the three tokens
`metareason.tokenize.lab.ANSWER_TEMPLATE` (its whitespace split). `force_tokens` (the end of
thinking, then the template) is what budget forcing appends and what a probe example with
`delimiter=True` starts its probe with.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from metareason.format.example import Example
from metareason.format.verdict import Verdict

__all__ = ["Format", "ANSWER_TEMPLATE", "END_THINK"]

#: The paper's answer template (Algorithm 3), written after the end of thinking, before the answer.
ANSWER_TEMPLATE = "\n\n**Final Answer**\n\\boxed{"
#: The end-of-thinking delimiter.
END_THINK = "</think>"


class Format(Protocol):
    """What every format provides (`LabFormat`, `HFFormat`)."""

    delimiter: str
    """The end-of-thinking text ("</think>")."""
    end_think: int | None
    """Its id (None where the vocabulary has no such single token)."""
    stop_tokens: tuple[int, ...]
    """Ids that end a generation (the first one ends an SFT example)."""
    pad_id: int
    template: str
    """The answer template (`ANSWER_TEMPLATE`)."""
    template_tokens: tuple[int, ...]
    """Its ids (a probe without the delimiter starts with them)."""
    force_tokens: tuple[int, ...]
    """The end of thinking, then the answer template (budget forcing; a probe with the delimiter)."""
    step_ids: frozenset[int]
    """Ids that end a reasoning step (the probe's "step" cut rule)."""
    sentence_ids: frozenset[int]
    """Ids that end a sentence (the probe's "sentence" cut rule)."""

    def prompt(self, record: dict) -> list[int]:
        """record["question"] as the model is prompted: ids up to and including the start of thinking."""
        ...

    def probe_example(self, question: str, trajectory: str, answer: str, *, delimiter: bool = False,
                      meta: dict | None = None) -> Example:
        """The probe's input: prompt, trajectory, probe (the answer template, after the end of thinking
        when `delimiter`, then the answer) and its targets (the answer tokens)."""
        ...

    def sft_example(self, record: dict) -> dict[str, np.ndarray]:
        """One SFT sequence: tokens int32[n] (`prompt(record)` then the trained part) and loss_mask
        int32[n] (0 on the prompt, 1 after)."""
        ...

    def answer(self, output: Sequence[int] | str) -> str | None:
        """The final answer of a generated output (ids after the prompt, or its text); None if none."""
        ...

    def verdict(self, output: Sequence[int] | str, record: dict) -> Verdict:
        """The output (ids after the prompt, or its text) judged against record["answer"]."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_type(self, token_id: int) -> str:
        """The type of a trajectory token ("digit", "reflection", "connective", "delimiter", ...)."""
        ...
