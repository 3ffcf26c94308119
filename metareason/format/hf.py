"""`HFFormat`: a Hugging Face tokenizer with its chat template; answers in \\boxed{}, judged by
Math-Verify (`math_verdict`).

    prompt:  chat template with the generation prompt, then `think_prefix` (e.g. "<think>\\n")
    probe:   [</think>] + ANSWER_TEMPLATE, then the answer (targets: the answer tokens)
    SFT:     prompt (loss 0), then the generation as written and the eos (loss 1)

`think_prefix` is unescaped once (`unescape`): the two characters backslash and n, as a command
line gives them (`--think-prefix '<think>\\n'`), become a newline; so do backslash-t (tab) and
a doubled backslash (one backslash). Text that holds a real newline is left as it is."""

from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

from metareason.format.example import Example, FormatError
from metareason.format.extract import final_boxed
from metareason.format.protocol import ANSWER_TEMPLATE, END_THINK
from metareason.format.verdict import Verdict, math_verdict

__all__ = ["HFFormat", "unescape"]

_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def unescape(text: str) -> str:
    """`text` with the escapes backslash-n, backslash-t and backslash-backslash replaced once, left
    to right ("<think>\\\\n" -> "<think>" + newline; a doubled backslash then n stays backslash-n)."""
    return re.sub(r"\\[nt\\]", lambda m: _ESCAPES[m.group(0)], text)


class HFFormat:
    """A Hugging Face tokenizer (`metareason.tokenize.HFTokenizer`). Stop tokens: the tokenizer's
    eos token and "<|im_end|>" / "<|endoftext|>" where the vocabulary has them; steps end at a
    token holding a blank line, sentences at one ending in "." or a newline."""

    REFLECTION = ("wait", "alternatively", "hold", "hmm")
    CONNECTIVE = ("therefore", "since", "so", "thus")

    def __init__(self, tokenizer, *, think_prefix: str = "", delimiter: str = END_THINK,
                 template: str = ANSWER_TEMPLATE):
        self.tok, self.delimiter, self.template = tokenizer, delimiter, template
        self.think_prefix = unescape(think_prefix)
        stops = []
        for name in (tokenizer.special_tokens.get("eos_token"), "<|im_end|>", "<|endoftext|>"):
            tid = tokenizer.tokenizer.token_to_id(name) if name else None
            if tid is not None and tid not in stops:
                stops.append(tid)
        self.stop_tokens = tuple(stops)
        pad = tokenizer.special_tokens.get("pad_token")
        pad_id = tokenizer.tokenizer.token_to_id(pad) if pad else None
        self.pad_id = pad_id if pad_id is not None else 0
        self.end_think = tokenizer.tokenizer.token_to_id(delimiter)
        self.template_tokens = tuple(tokenizer.encode(template))
        self.force_tokens = tuple(tokenizer.encode(delimiter + template))

    # -- prompting and examples ---------------------------------------------------------------
    def prompt(self, record: dict) -> list[int]:
        text = self.tok.apply_chat_template([{"role": "user", "content": record["question"]}],
                                            add_generation_prompt=True)
        return self.tok.encode(text + self.think_prefix)

    def probe_example(self, question: str, trajectory: str, answer: str, *, delimiter: bool = False,
                      meta: dict | None = None) -> Example:
        ans = self.tok.encode(answer)
        if not answer.strip() or not ans:
            raise FormatError(f"answer {answer!r} tokenizes to nothing")
        head = list(self.force_tokens if delimiter else self.template_tokens)
        traj = self.tok.encode(trajectory)
        return Example(np.asarray(self.prompt({"question": question}), np.int32), np.asarray(traj, np.int32),
                       np.asarray(head + ans, np.int32), np.asarray([False] * len(head) + [True] * len(ans)),
                       tuple(self.token_type(t) for t in traj), dict(meta or {}))

    def sft_example(self, record: dict) -> dict[str, np.ndarray]:
        """tokens int32[n] = `prompt(record)` (loss 0), then the tokens of record["trajectory"]
        (encoded on its own, as the model would sample it) and the first stop token (the eos)
        (loss 1); loss_mask int32[n]. The trajectory is the whole generation: its thinking,
        `delimiter` and final answer, as written."""
        if not self.stop_tokens:
            raise FormatError("this tokenizer has no eos token (nor <|im_end|> / <|endoftext|>) to end an example")
        prompt = self.prompt(record)
        rest = [*self.tok.encode(record["trajectory"]), self.stop_tokens[0]]
        return {"tokens": np.asarray(prompt + rest, np.int32),
                "loss_mask": np.asarray([0] * len(prompt) + [1] * len(rest), np.int32)}

    example = sft_example  # the name train/sft.py uses

    # -- judging ------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids, trailing stop tokens dropped."""
        ids = [int(i) for i in ids]
        while ids and ids[-1] in self.stop_tokens:
            ids = ids[:-1]
        return self.tok.decode(ids)

    def _text(self, output: Sequence[int] | str) -> str:
        return output if isinstance(output, str) else self.decode(output)

    def answer(self, output: Sequence[int] | str) -> str | None:
        """The last \\boxed{...} after the end of thinking."""
        return final_boxed(self._text(output), self.delimiter)

    def verdict(self, output: Sequence[int] | str, record: dict) -> Verdict:
        """`math_verdict` of the output's text (ids after the prompt are decoded first)."""
        return math_verdict(self._text(output), record["answer"], delimiter=self.delimiter)

    # -- token classes (the probe's cut rules and token-type statistics) ----------------------
    @functools.cached_property
    def step_ids(self) -> frozenset[int]:
        return frozenset(i for i in range(self.tok.vocab_size) if "\n\n" in self.tok.decode([i]))

    @functools.cached_property
    def sentence_ids(self) -> frozenset[int]:
        return frozenset(i for i in range(self.tok.vocab_size) if self.tok.decode([i]).rstrip().endswith((".", "\n")))

    def token_type(self, token_id: int) -> str:
        """From the decoded token text: "delimiter", "reflection", "connective", "digit", "word" or "symbol"."""
        text = self.tok.decode([int(token_id)]).strip()
        low = text.lower()
        if text == self.delimiter:
            return "delimiter"
        if low in self.REFLECTION:
            return "reflection"
        if low in self.CONNECTIVE:
            return "connective"
        if text.isdigit():
            return "digit"
        return "word" if text.isalpha() else "symbol"
