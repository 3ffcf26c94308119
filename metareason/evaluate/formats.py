"""Moved to `metareason.format` (the one Format for the probe, eval, GRPO, SFT and the lab); these
names stay importable from here."""

from metareason.format import Format, HFFormat, LabFormat

__all__ = ["Format", "LabFormat", "HFFormat"]
