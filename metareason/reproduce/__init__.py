"""`metareason reproduce`: every experiment of the paper (E1..E12) with its seeds, a verdict per
claim by a rule fixed in code before the run, and one report (`base` is the interface)."""

from metareason.reproduce.base import (BUDGETS, VERDICTS, Budget, Claim, ClaimResult, Experiment, Unit, get_budget,
                                       verdict)
from metareason.reproduce.registry import experiments
from metareason.reproduce.report import benchmarks_table, write_experiments_md
from metareason.reproduce.runner import ReproduceConfig, reproduce, run_reproduce

__all__ = ["BUDGETS", "VERDICTS", "Budget", "Claim", "ClaimResult", "Experiment", "Unit", "get_budget", "verdict",
           "experiments", "reproduce", "run_reproduce", "ReproduceConfig", "write_experiments_md",
           "benchmarks_table"]
