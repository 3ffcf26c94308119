"""`SamplingConfig`: how `generate` picks each new token (frozen and hashable: a static jit argument)."""

from __future__ import annotations

import dataclasses
import math
import numbers

__all__ = ["SamplingConfig", "SamplingError", "Forcing"]


class SamplingError(ValueError):
    """A bad sampling setting or `generate` input (one line, names the field or argument)."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings, applied to each step's logits in this order (as Hugging Face does):

      temperature: divide the logits by it; 0 means greedy (argmax; top_k / top_p then do nothing).
      top_k: keep the tokens whose logit is >= the k-th largest (ties with it kept); 0 = off.
      top_p: keep the smallest set of most probable tokens whose probability sums to >= top_p,
        plus every token tied with the least probable one kept (see `top_p_filter`); 1.0 = off.
      max_new_tokens: the most tokens generated per row (a row's `budgets` entry may lower it).
      stop_tokens: token ids that end a row; the stop token is kept in the output and counted.
      pad_id: written into the output after a row's end (any int; it is never fed to the model).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        t = self.temperature
        if not _is_real(t) or not math.isfinite(t) or t < 0:
            raise SamplingError(f"sampling field temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        object.__setattr__(self, "temperature", float(t))
        if not _is_int(self.top_k) or self.top_k < 0:
            raise SamplingError(f"sampling field top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        object.__setattr__(self, "top_k", int(self.top_k))
        p = self.top_p
        if not _is_real(p) or not 0 < p <= 1:
            raise SamplingError(f"sampling field top_p must be a number in (0, 1] (1.0 = off), got {p!r}")
        object.__setattr__(self, "top_p", float(p))
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise SamplingError(f"sampling field max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))
        stops = self.stop_tokens
        if _is_int(stops):
            stops = (stops,)
        if isinstance(stops, (str, bytes)) or not hasattr(stops, "__iter__"):
            raise SamplingError(f"sampling field stop_tokens must be a tuple of token ids, got {self.stop_tokens!r}")
        stops = tuple(stops)
        if any(not _is_int(s) or s < 0 for s in stops):
            raise SamplingError(f"sampling field stop_tokens must hold token ids >= 0, got {self.stop_tokens!r}")
        object.__setattr__(self, "stop_tokens", tuple(int(s) for s in stops))
        if not _is_int(self.pad_id) or not -2**31 <= self.pad_id < 2**31:
            raise SamplingError(f"sampling field pad_id must be an int32, got {self.pad_id!r}")
        object.__setattr__(self, "pad_id", int(self.pad_id))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def replace(self, **changes) -> "SamplingConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Forcing:
    """Budget forcing (s1; the paper's E12): a row that has generated its thinking budget of tokens
    without emitting `end_think` is given `tokens` next, one per step, instead of samples (e.g.
    `</think> **Final Answer** \\boxed{` as ids), after which sampling resumes for the answer. A row
    whose model emits `end_think` within its budget is never forced, unless `always_template`:
    then `tokens[1:]` (the answer template) are forced right after its own `end_think` too, so
    every row answers in the template (the paper's protocol; needs `tokens[0] == end_think`).
    Frozen and hashable (static).
    """

    end_think: int
    tokens: tuple[int, ...]
    always_template: bool = False

    def __post_init__(self):
        if not _is_int(self.end_think) or self.end_think < 0:
            raise SamplingError(f"forcing field end_think must be a token id >= 0, got {self.end_think!r}")
        toks = (self.tokens,) if _is_int(self.tokens) else self.tokens
        if isinstance(toks, (str, bytes)) or not hasattr(toks, "__iter__"):
            raise SamplingError(f"forcing field tokens must be a tuple of token ids, got {self.tokens!r}")
        toks = tuple(toks)
        if not toks or any(not _is_int(t) or t < 0 for t in toks):
            raise SamplingError(f"forcing field tokens must be a non-empty tuple of token ids >= 0, got {self.tokens!r}")
        if not isinstance(self.always_template, bool):
            raise SamplingError(f"forcing field always_template must be a bool, got {self.always_template!r}")
        if self.always_template and toks[0] != self.end_think:
            raise SamplingError(f"forcing with always_template needs tokens[0] == end_think ({self.end_think}), "
                                f"got {toks[0]}")
        object.__setattr__(self, "end_think", int(self.end_think))
        object.__setattr__(self, "tokens", tuple(int(t) for t in toks))
