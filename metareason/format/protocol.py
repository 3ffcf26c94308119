"""How a model is prompted and judged: the lab's vocabulary and layout, or a Hugging Face
tokenizer with its chat template and answers in \\boxed{}. Evaluation, SFT and GRPO share these.

    fmt = LabFormat()                                    # or HFFormat(HFTokenizer.from_dir(d))
    ids = fmt.prompt(record)                             # list[int]: what the model continues
    v = fmt.verdict(generated_ids, record)               # Verdict(answer, correct, well_formed)
    ex = fmt.example(record)                             # SFT: prompt + record["trajectory"], loss mask
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from metareason.evaluate.rewards import Verdict, lab_verdict, math_verdict

__all__ = ["Format", "LabFormat", "HFFormat"]


class Format(Protocol):
    stop_tokens: tuple[int, ...]
    pad_id: int
    force_tokens: tuple[int, ...]
    """End-of-thinking delimiter then the answer template (budget forcing)."""
    end_think: int | None

    def prompt(self, record: dict) -> list[int]: ...

    def verdict(self, ids: Sequence[int], record: dict) -> Verdict: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def example(self, record: dict) -> dict[str, np.ndarray]: ...


class LabFormat:
    """`<bos> question <think>` prompts; exact match of the boxed answer."""

    def __init__(self):
        from metareason.tokenize.lab import ANSWER_TEMPLATE, LAB_VOCAB

        self.vocab = LAB_VOCAB
        self.stop_tokens = (LAB_VOCAB.eos_id,)
        self.pad_id = LAB_VOCAB.pad_id
        self.end_think = LAB_VOCAB.end_think_id
        self.force_tokens = (LAB_VOCAB.end_think_id, *LAB_VOCAB.encode_tokens(ANSWER_TEMPLATE))

    def prompt(self, record: dict) -> list[int]:
        from metareason.tasks.lab import prompt_tokens
        return prompt_tokens(record["question"], self.vocab)

    def verdict(self, ids: Sequence[int], record: dict) -> Verdict:
        return lab_verdict(ids, record["answer"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode([int(i) for i in ids])

    def example(self, record: dict) -> dict[str, np.ndarray]:
        """An SFT example: tokens int32[n] of `<bos> question <think> trajectory </think> answer
        template <eos>` and loss_mask int32[n], 1 on every token after `<think>`
        (`metareason.tasks.lab.encode_example`)."""
        from metareason.tasks.lab import encode_example
        return encode_example(record["question"], record["trajectory"], record["answer"], self.vocab)


class HFFormat:
    """The chat template with the generation prompt (plus `think_prefix`, e.g. "<think>\\n");
    the answer is the last \\boxed{} after `delimiter`, judged with Math-Verify. Stop tokens: the
    tokenizer's eos token and "<|im_end|>" where the vocabulary has them."""

    def __init__(self, tokenizer, *, think_prefix: str = "", delimiter: str = "</think>",
                 template: str = "\n\n**Final Answer**\n\\boxed{"):
        self.tok, self.think_prefix, self.delimiter = tokenizer, think_prefix, delimiter
        stops = []
        for name in (tokenizer.special_tokens.get("eos_token"), "<|im_end|>", "<|endoftext|>"):
            tid = tokenizer.tokenizer.token_to_id(name) if name else None
            if tid is not None and tid not in stops:
                stops.append(tid)
        self.stop_tokens = tuple(stops)
        pad = tokenizer.special_tokens.get("pad_token")
        pad_id = tokenizer.tokenizer.token_to_id(pad) if pad else None
        self.pad_id = pad_id if pad_id is not None else 0
        end = tokenizer.tokenizer.token_to_id(delimiter)
        self.end_think = end
        self.force_tokens = tuple(tokenizer.encode(delimiter + template))

    def prompt(self, record: dict) -> list[int]:
        text = self.tok.apply_chat_template([{"role": "user", "content": record["question"]}],
                                            add_generation_prompt=True)
        return self.tok.encode(text + self.think_prefix)

    def example(self, record: dict) -> dict[str, np.ndarray]:
        """An SFT example: tokens int32[n] = `prompt(record)` (loss 0), then the tokens of
        record["trajectory"] (encoded on its own, as the model would sample it) and the first stop
        token (the eos) (loss 1); loss_mask int32[n]. The trajectory is the whole generation: its
        thinking, `delimiter` and final answer, as written."""
        if not self.stop_tokens:
            raise ValueError("this tokenizer has no eos token (nor <|im_end|> / <|endoftext|>) to end an example")
        prompt = self.prompt(record)
        rest = [*self.tok.encode(record["trajectory"]), self.stop_tokens[0]]
        return {"tokens": np.asarray(prompt + rest, np.int32),
                "loss_mask": np.asarray([0] * len(prompt) + [1] * len(rest), np.int32)}

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        while ids and ids[-1] in self.stop_tokens:
            ids = ids[:-1]
        return self.tok.decode(ids)

    def verdict(self, ids: Sequence[int], record: dict) -> Verdict:
        return math_verdict(self.decode(ids), record["answer"], delimiter=self.delimiter)
