"""Answer extraction from generated text."""

from __future__ import annotations

__all__ = ["boxed_answer"]


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
