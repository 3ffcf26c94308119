"""`metareason <command>`: the command line. Each command is a dataclass config (tyro turns
its fields and docstrings into flags and help); the work lives in library functions.

    metareason selfcheck
    metareason train --preset arith-long --steps 800 --out runs/my-run
    metareason train --preset arith-long --out runs/my-run --resume
    metareason probe --model runs/my-run --out runs/my-probe
    metareason demo
    metareason compare --model runs/my-run --out runs/my-compare
"""

from __future__ import annotations

import sys

import tyro

from metareason.selfcheck import SelfCheck, run_selfcheck

USAGE = "usage: metareason {selfcheck,train,probe,demo,compare} [--help]"


def _train(argv: list[str]) -> None:
    """SFT on the synthetic lab (--preset NAME, --resume)."""
    from metareason.train.presets import train_presets
    from metareason.train.sft import SFTConfig, train_sft

    presets = train_presets()
    default = presets["lab"]
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv) or argv[i + 1] not in presets:
            raise SystemExit(f"metareason train: --preset needs one of {', '.join(sorted(presets))}")
        default = presets[argv[i + 1]]
        argv = argv[:i] + argv[i + 2:]
    cfg = tyro.cli(SFTConfig, default=default, args=argv, prog="metareason train",
                   description="SFT on the synthetic lab. --preset NAME (one of "
                               f"{', '.join(sorted(presets))}) picks the defaults; flags override them.")
    train_sft(cfg)


def _selfcheck(argv: list[str]) -> None:
    """Build, export, reload and cross-check tiny models of each family."""
    run_selfcheck(tyro.cli(SelfCheck, args=argv, prog="metareason selfcheck"))


def _probe(argv: list[str]) -> None:
    """Answer loss along trajectories and the paper's analyses (E1-E5, E12) for a model."""
    from metareason.probe.run import ProbeConfig, run_probe

    cfg = tyro.cli(ProbeConfig, args=argv, prog="metareason probe")
    res = run_probe(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, curves.jsonl and {len(res['figures'])} figures")


def _demo(argv: list[str]) -> None:
    """Train (or reuse) a lab model, probe it, write a report with the paper's figures."""
    from metareason.probe.run import DemoConfig, run_demo

    run_demo(tyro.cli(DemoConfig, args=argv, prog="metareason demo"))


def _compare(argv: list[str]) -> None:
    """Trajectory tokens vs true gradient steps: probe vs line-searched steps, exact implicit
    updates vs the true gradient, Proposition 2.1 on the first block."""
    from metareason.inner.compare import CompareConfig, run_compare

    cfg = tyro.cli(CompareConfig, args=argv, prog="metareason compare")
    res = run_compare(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, compare.jsonl and {len(res['figures'])} figures")


COMMANDS = {"selfcheck": _selfcheck, "train": _train, "probe": _probe, "demo": _demo, "compare": _compare}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("\n".join(f"  {name:10s} {fn.__doc__}" for name, fn in COMMANDS.items()))
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        raise SystemExit(f"metareason: unknown command {argv[0]!r}\n{USAGE}")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
