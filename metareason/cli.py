"""`metareason <command>`: the command line. Each command is a dataclass config (tyro turns
its fields and docstrings into flags and help); the work lives in library functions.

    metareason selfcheck
    metareason train --preset arith-long --steps 800 --out runs/my-run
    metareason train --preset arith-long --out runs/my-run --resume
    metareason train --init path/to/hf-model --data generations.jsonl --out runs/my-hf-sft
    metareason rl --init runs/my-run --out runs/my-grpo
    metareason eval --model runs/my-grpo --data lab:test lab:heldout --n 8 --k 1 4 8
    metareason probe --model runs/my-run --out runs/my-probe
    metareason demo
    metareason compare --model runs/my-run --out runs/my-compare
    metareason export runs/my-run hf/my-run
"""

from __future__ import annotations

import os
import sys

import tyro

from metareason.demo import DemoConfig, run_demo
from metareason.evaluate.run import EvalConfig, run_eval
from metareason.parallel import initialize_distributed
from metareason.probe.run import ProbeConfig, run_probe
from metareason.runs.export import ExportConfig, run_export
from metareason.selfcheck import SelfCheck, run_selfcheck
from metareason.train.presets import rl_presets, train_presets
from metareason.train.rl import GRPOConfig, train_grpo
from metareason.train.sft import SFTConfig, train_sft

USAGE = "usage: metareason {selfcheck,train,rl,eval,probe,demo,compare,export} [--help]"


def _preset_cli(argv: list[str], cls, presets: dict, default: str, prog: str, what: str):
    """A config from `--preset NAME` (one of `presets`; `default` without the flag), then flags."""
    base = presets[default]
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv) or argv[i + 1] not in presets:
            raise SystemExit(f"{prog}: --preset needs one of {', '.join(sorted(presets))}")
        base = presets[argv[i + 1]]
        argv = argv[:i] + argv[i + 2:]
    return tyro.cli(cls, default=base, args=argv, prog=prog,
                    description=f"{what} --preset NAME (one of {', '.join(sorted(presets))}) picks the defaults; "
                                "flags override them.")


def parse_config(command: str, argv: list[str]):
    """The config `metareason COMMAND ARGV...` runs with, without running anything (for checking
    command lines, e.g. experiments/full_scale.py --check). Commands: train, rl, eval, probe."""
    if command == "train":
        return _preset_cli(argv, SFTConfig, train_presets(), "lab", "metareason train",
                           "SFT on the synthetic lab, or (--init MODEL_OR_RUN --data FILE) on the generations of a "
                           ".jsonl / .parquet file.")
    if command == "rl":
        return _preset_cli(argv, GRPOConfig, rl_presets(), "arith", "metareason rl", "GRPO on the synthetic lab.")
    if command == "eval":
        return tyro.cli(EvalConfig, args=argv, prog="metareason eval")
    if command == "probe":
        return tyro.cli(ProbeConfig, args=argv, prog="metareason probe")
    raise SystemExit(f"metareason: no config to parse for command {command!r} (train, rl, eval, probe)")


def _train(argv: list[str]) -> None:
    """SFT on the synthetic lab, or on a file's generations (--preset NAME, --init, --data FILE, --resume)."""
    train_sft(parse_config("train", argv))


def _rl(argv: list[str]) -> None:
    """GRPO on the synthetic lab, from scratch or from a `train` run (--init RUN, --preset NAME, --resume)."""
    train_grpo(parse_config("rl", argv))


def _eval(argv: list[str]) -> None:
    """n samples per question: Pass@k and mG-Pass@k per dataset, with intervals."""
    cfg = parse_config("eval", argv)
    run_eval(cfg)
    print((cfg.out / "table.md").read_text())


def _selfcheck(argv: list[str]) -> None:
    """Build, export, reload and cross-check tiny models of each family."""
    run_selfcheck(tyro.cli(SelfCheck, args=argv, prog="metareason selfcheck"))


def _probe(argv: list[str]) -> None:
    """Answer loss along trajectories and the paper's analyses (E1-E5, E12) for a model."""
    cfg = parse_config("probe", argv)
    res = run_probe(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, curves.jsonl and {len(res['figures'])} figures")


def _demo(argv: list[str]) -> None:
    """Train (or reuse) a lab model, probe it, write a report with the paper's figures."""
    run_demo(tyro.cli(DemoConfig, args=argv, prog="metareason demo"))


def _compare(argv: list[str]) -> None:
    """Trajectory tokens vs true gradient steps: probe vs line-searched steps, exact implicit
    updates vs the true gradient, Proposition 2.1 on the first block."""
    from metareason.studies.compare import CompareConfig, run_compare

    cfg = tyro.cli(CompareConfig, args=argv, prog="metareason compare")
    res = run_compare(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, compare.jsonl and {len(res['figures'])} figures")


def _export(argv: list[str]) -> None:
    """Write a run (any kept step) as a Hugging Face folder that transformers loads."""
    cfg = tyro.cli(ExportConfig, args=argv, prog="metareason export")
    print(f"wrote {run_export(cfg)}")


COMMANDS = {"selfcheck": _selfcheck, "train": _train, "rl": _rl, "eval": _eval, "probe": _probe, "demo": _demo,
            "compare": _compare, "export": _export}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("\n".join(f"  {name:10s} {fn.__doc__}" for name, fn in COMMANDS.items()))
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        raise SystemExit(f"metareason: unknown command {argv[0]!r}\n{USAGE}")
    if os.environ.get("METAREASON_COORDINATOR") or os.environ.get("METAREASON_DISTRIBUTED") == "1":
        # several hosts: join JAX's distributed runtime before any computation (arguments from
        # METAREASON_* or, with METAREASON_DISTRIBUTED=1 alone, detected on TPU pods and SLURM)
        initialize_distributed()
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
