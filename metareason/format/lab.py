"""`LabFormat`: the synthetic lab's vocabulary and layout (`metareason.tasks.lab`).

    <bos> question [/think | /no_think] <think> | trajectory | </think> **Final Answer** \\boxed{ answer } <eos>

The verdict is the exact match of the boxed answer (`lab_verdict`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metareason.format.example import Example, FormatError
from metareason.format.protocol import ANSWER_TEMPLATE, END_THINK
from metareason.format.verdict import Verdict, lab_verdict
from metareason.tasks.lab import encode_example, parse_answer, prompt_tokens
from metareason.tokenize.lab import ANSWER_CLOSE, LAB_VOCAB, LabTokenError, LabVocab

__all__ = ["LabFormat"]


class LabFormat:
    """The lab vocabulary: prompt `<bos> question <think>`, probe `[</think>] **Final Answer**
    \\boxed{ answer }` (targets: the answer), steps and sentences end at ";"."""

    delimiter = END_THINK
    template = ANSWER_TEMPLATE

    def __init__(self, vocab: LabVocab | None = None):
        self.vocab = v = vocab or LAB_VOCAB
        self.stop_tokens = (v.eos_id,)
        self.pad_id = v.pad_id
        self.end_think = v.end_think_id
        self.template_tokens = tuple(v.encode(self.template))
        self.force_tokens = (v.end_think_id, *self.template_tokens)
        self.step_ids = frozenset({v.ids[";"]})
        self.sentence_ids = self.step_ids

    def prompt(self, record: dict) -> list[int]:
        """`<bos> question [MARK] <think>`, MARK the marker of record["mode"] (none when absent or "")."""
        return prompt_tokens(record["question"], self.vocab, record.get("mode", ""))

    def probe_example(self, question: str, trajectory: str, answer: str, *, delimiter: bool = False,
                      meta: dict | None = None, mode: str = "") -> Example:
        v = self.vocab
        ans = v.encode(answer) if answer.strip() else []
        if not ans:
            raise FormatError(f"answer {answer!r} tokenizes to nothing")
        head = list(self.force_tokens if delimiter else self.template_tokens)
        probe = head + ans + [v.ids[ANSWER_CLOSE]]
        targets = [False] * len(head) + [True] * len(ans) + [False]
        traj = v.encode(trajectory)
        return Example(np.asarray(self.prompt({"question": question, "mode": mode}), np.int32), np.asarray(traj, np.int32),
                       np.asarray(probe, np.int32), np.asarray(targets), tuple(v.token_type(t) for t in traj),
                       dict(meta or {}))

    def sft_example(self, record: dict) -> dict[str, np.ndarray]:
        """tokens int32[n] of `<bos> question <think> trajectory </think> **Final Answer** \\boxed{
        answer } <eos>` and loss_mask int32[n], 1 on every token after `<think>`
        (`metareason.tasks.lab.encode_example`)."""
        return encode_example(record["question"], record["trajectory"], record["answer"], self.vocab,
                              record.get("mode", ""))

    example = sft_example  # the name train/sft.py uses

    def _ids(self, output: Sequence[int] | str) -> list[int] | None:
        if not isinstance(output, str):
            return [int(i) for i in output]
        try:
            return self.vocab.encode(output)
        except LabTokenError:
            return None  # text the lab vocabulary cannot write has no lab answer

    def answer(self, output: Sequence[int] | str) -> str | None:
        ids = self._ids(output)
        return None if ids is None else parse_answer(ids, self.vocab)[0]

    def verdict(self, output: Sequence[int] | str, record: dict) -> Verdict:
        """`lab_verdict` of the output (ids after the prompt, or lab text)."""
        ids = self._ids(output)
        return Verdict(None, False, False) if ids is None else lab_verdict(ids, record["answer"], self.vocab)

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode([int(i) for i in ids])

    def token_type(self, token_id: int) -> str:
        return self.vocab.token_type(int(token_id))
