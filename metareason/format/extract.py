"""Answer extraction from generated text: the last \\boxed{...}, after the end of thinking."""

from __future__ import annotations

__all__ = ["boxed_answer", "final_boxed"]


def boxed_answer(text: str) -> str | None:
    """The content of the last \\boxed{...} in `text` (braces balanced), stripped; None if there is
    none or its braces never close."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def final_boxed(text: str, delimiter: str | None = "</think>") -> str | None:
    """The final answer of a generation: `boxed_answer` of what follows the last `delimiter` (the
    end of thinking) when the text contains it, else of the whole text."""
    body = text.split(delimiter)[-1] if delimiter and delimiter in text else text
    return boxed_answer(body)
