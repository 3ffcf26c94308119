"""How a model is prompted and judged: one Format (prompt, thinking prefix, answer template,
answer extraction, verdict) for the probe, eval, GRPO, SFT and the lab.

(Transitional: re-exports the current classes until the package holds them; issue 16.)
"""

from metareason.evaluate.formats import Format, HFFormat, LabFormat  # noqa: F401  (moves here)
from metareason.probe.inputs import Example  # noqa: F401  (moves here)

__all__ = ["Format", "LabFormat", "HFFormat", "Example"]
