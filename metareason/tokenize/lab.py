"""The synthetic lab's small word-level vocabulary.

Every symbol the lab's tasks write is one token: digits (numbers are spelled digit by digit,
so carries are visible to the model), operators, variable letters, a few words, the
reflection words ("Wait", "Alternatively", "Hold_on", "Hmm"), connectives ("Therefore",
"Since", "So"), the thinking delimiters `<think>` / `</think>`, and the answer template
`**Final Answer** \\boxed{ ... }`, and the mode markers "/think" / "/no_think" (Qwen3's switches;
appended last so every older id keeps its value). Token-type statistics (PAPER.md, E5) therefore mean something.

Text form: tokens separated by single spaces, except that consecutive digits are written
together ("12 + 35"). `encode` splits such numbers back into digit tokens.
"""

from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["LabVocab", "LAB_VOCAB", "LabTokenError", "REFLECTION_WORDS", "CONNECTIVE_WORDS",
           "THINK", "END_THINK", "ANSWER_TEMPLATE", "ANSWER_CLOSE", "MODES", "MODE_MARKS"]

PAD, BOS, EOS, THINK, END_THINK = "<pad>", "<bos>", "<eos>", "<think>", "</think>"
#: Tokens written between the trajectory's end and the answer (the probe's fixed template).
ANSWER_TEMPLATE = ("**Final", "Answer**", "\\boxed{")
ANSWER_CLOSE = "}"
REFLECTION_WORDS = ("Wait", "Alternatively", "Hold_on", "Hmm")
CONNECTIVE_WORDS = ("Therefore", "Since", "So")
_WORDS = ("compute", "add", "solve", "follow", "from", "steps", "step", "for", "x", "carry", "write",
          "digit", "check", "ok", "not", "is", "then", "result", "column", "map", "answer", "start", "borrow")
_SYMBOLS = ("+", "-", "*", "/", "=", "(", ")", ",", ";", ":", "?", "->", "|")
_LETTERS = tuple("abcdefghijklmnopqrstuvwyz")  # 'x' is a word above (the unknown)
_DIGITS = tuple("0123456789")
#: Mode of a prompt -> its marker token ("" = no marker: the single-mode lab of before).
MODE_MARKS = {"": None, "think": "/think", "no_think": "/no_think"}
MODES = tuple(MODE_MARKS)


class LabTokenError(ValueError):
    """Text that the lab vocabulary cannot encode (names the offending piece)."""


class LabVocab:
    """A fixed word-level vocabulary. ids are stable: they depend only on the token list."""

    def __init__(self, tokens: Sequence[str]):
        if len(set(tokens)) != len(tokens):
            raise ValueError("lab vocabulary has duplicate tokens")
        self.tokens = tuple(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id, self.bos_id, self.eos_id = self.ids[PAD], self.ids[BOS], self.ids[EOS]
        self.think_id, self.end_think_id = self.ids[THINK], self.ids[END_THINK]
        self.digit_ids = frozenset(self.ids[d] for d in _DIGITS)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        """Text -> token strings (numbers split into digits)."""
        out = []
        for piece in text.split():
            if piece in self.ids:
                out.append(piece)
            elif piece.isdigit():
                out.extend(piece)
            else:
                raise LabTokenError(f"{piece!r} is not in the lab vocabulary")
        return out

    def encode(self, text: str) -> list[int]:
        """Text -> token ids."""
        return [self.ids[t] for t in self.split(text)]

    def encode_tokens(self, tokens: Iterable[str]) -> list[int]:
        try:
            return [self.ids[t] for t in tokens]
        except KeyError as err:
            raise LabTokenError(f"{err.args[0]!r} is not in the lab vocabulary") from None

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Token ids -> text (digits joined into numbers)."""
        specials = {self.pad_id, self.bos_id, self.eos_id}
        parts: list[str] = []
        prev_digit = False
        for i in ids:
            i = int(i)
            if skip_special and i in specials:
                continue
            if not 0 <= i < self.size:
                raise LabTokenError(f"token id {i} out of range [0, {self.size})")
            tok = self.tokens[i]
            is_digit = i in self.digit_ids
            if is_digit and prev_digit:
                parts[-1] += tok
            else:
                parts.append(tok)
            prev_digit = is_digit
        return " ".join(parts)

    def mode_id(self, mode: str) -> int | None:
        """The id of `mode`'s marker ("think" -> "/think", "no_think" -> "/no_think"), None for ""."""
        if mode not in MODE_MARKS:
            raise ValueError(f"unknown mode {mode!r} (known: {', '.join(repr(m) for m in MODES)})")
        mark = MODE_MARKS[mode]
        return None if mark is None else self.ids[mark]

    def token_type(self, token_id: int) -> str:
        """"reflection", "connective", "delimiter" (</think>), "digit", "symbol" or "word"."""
        tok = self.tokens[int(token_id)]
        if tok in REFLECTION_WORDS:
            return "reflection"
        if tok in CONNECTIVE_WORDS:
            return "connective"
        if tok == END_THINK:
            return "delimiter"
        if tok in _DIGITS:
            return "digit"
        if tok in _SYMBOLS:
            return "symbol"
        return "word"


#: The lab vocabulary (pad is id 0).
LAB_VOCAB = LabVocab((PAD, BOS, EOS, THINK, END_THINK, *ANSWER_TEMPLATE, ANSWER_CLOSE, *REFLECTION_WORDS,
                      *CONNECTIVE_WORDS, *_DIGITS, *_SYMBOLS, *_WORDS, *_LETTERS,
                      *(m for m in MODE_MARKS.values() if m)))

