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
    metareason reproduce --budget smoke --out runs/reproduce-smoke
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import tyro

from metareason.demo import DemoConfig, run_demo
from metareason.errors import ConfigError, MetareasonError
from metareason.evaluate.run import EvalConfig, run_eval
from metareason.parallel import initialize_distributed
from metareason.probe.run import ProbeConfig, run_probe
from metareason.reproduce.runner import ReproduceConfig, run_reproduce
from metareason.runs.checkpoint import CheckpointDamaged
from metareason.runs.export import ExportConfig, run_export
from metareason.selfcheck import SelfCheck, run_selfcheck
from metareason.studies.compare import CompareConfig, run_compare
from metareason.train.loop import TrainingDiverged
from metareason.train.presets import rl_presets, train_presets
from metareason.train.rl import GRPOConfig, train_grpo
from metareason.train.sft import SFTConfig, train_sft

__all__ = ["main", "parse_config", "BAD_INPUT", "DEBUG_ENV"]

USAGE = "usage: metareason [--debug] {selfcheck,train,rl,eval,probe,demo,compare,export,reproduce} [--help]"

#: Set to 1 to see the traceback of a bad-input error (as the global flag --debug does).
DEBUG_ENV = "METAREASON_DEBUG"

#: The errors that mean bad input (a flag, a data file, a model folder, an output folder): the
#: command line prints them as one line, `metareason: <what is wrong>`, and exits with code 2.
#: Anything else (an internal error) keeps its traceback.
BAD_INPUT = (MetareasonError, ValueError, OSError, TrainingDiverged, CheckpointDamaged)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _tyro_message(captured: str) -> str:
    """The one line of what is wrong, out of tyro's boxed error (title, rule, message, rule, help)."""
    lines = [_one_line(line.strip(" \t│╭╮╰╯─-")) for line in captured.splitlines()]
    body, rules = [], 0
    for raw, line in zip(captured.splitlines(), lines):
        if set(raw.strip()) <= set("─-╭╮╰╯│ ") and raw.strip():
            rules += 1
            if rules >= 2 and body:
                break
            continue
        if rules >= 1 and line:
            body.append(line)
    text = " ".join(body) or next((line for line in lines if line), "bad command line")
    if text.startswith("Error parsing ") and ": " in text:  # "Error parsing SFTConfig: --steps must be ..."
        what, rest = text[len("Error parsing "):].split(": ", 1)
        text = rest if not what.startswith("-") else f"{what}: {rest}"
    return text


def _tyro(cls, argv: list[str], prog: str, **kwargs):
    """`tyro.cli(cls, args=argv, prog=prog)`; its errors become one-line `ConfigError`s (its help and
    other output pass through)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return tyro.cli(cls, args=argv, prog=prog, **kwargs)
    except SystemExit as stop:
        if stop.code in (0, None):
            sys.stdout.write(buf.getvalue())
            raise
        raise ConfigError(f"{prog.removeprefix('metareason ')}: {_tyro_message(buf.getvalue())}") from None


def _preset_cli(argv: list[str], cls, presets: dict, default: str, prog: str, what: str):
    """A config from `--preset NAME` (one of `presets`; `default` without the flag), then flags."""
    base = presets[default]
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv) or argv[i + 1] not in presets:
            got = repr(argv[i + 1]) if i + 1 < len(argv) else "nothing"
            raise ConfigError(f"--preset needs one of {', '.join(sorted(presets))}, got {got}")
        base = presets[argv[i + 1]]
        argv = argv[:i] + argv[i + 2:]
    return _tyro(cls, argv, prog, default=base,
                 description=f"{what} --preset NAME (one of {', '.join(sorted(presets))}) picks the defaults; "
                             "flags override them.")


def parse_config(command: str, argv: list[str]):
    """The config `metareason COMMAND ARGV...` runs with, validated (every numeric flag in range,
    a one-line `ConfigError` naming the flag otherwise), without running anything (for checking
    command lines, e.g. experiments/full_scale.py --check). Commands: train, rl, eval, probe,
    compare, demo, reproduce."""
    if command == "train":
        cfg = _preset_cli(argv, SFTConfig, train_presets(), "lab", "metareason train",
                          "SFT on the synthetic lab, or (--init MODEL_OR_RUN --data FILE) on the generations of a "
                          ".jsonl / .parquet file.")
    elif command == "rl":
        cfg = _preset_cli(argv, GRPOConfig, rl_presets(), "arith", "metareason rl", "GRPO on the synthetic lab.")
    elif command in ("eval", "probe", "compare", "demo", "reproduce"):
        cls = {"eval": EvalConfig, "probe": ProbeConfig, "compare": CompareConfig, "demo": DemoConfig,
               "reproduce": ReproduceConfig}[command]
        cfg = _tyro(cls, argv, f"metareason {command}")
    else:
        raise ConfigError(f"no config to parse for command {command!r} (train, rl, eval, probe, compare, demo, "
                          "reproduce)")
    cfg.validate()
    return cfg


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
    run_selfcheck(_tyro(SelfCheck, argv, "metareason selfcheck"))


def _probe(argv: list[str]) -> None:
    """Answer loss along trajectories and the paper's analyses (E1-E5, E12) for a model."""
    cfg = parse_config("probe", argv)
    res = run_probe(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, curves.jsonl and {len(res['figures'])} figures")


def _demo(argv: list[str]) -> None:
    """Train (or reuse) a lab model, probe it, write a report with the paper's figures."""
    run_demo(parse_config("demo", argv))


def _compare(argv: list[str]) -> None:
    """Trajectory tokens vs true gradient steps: probe vs line-searched steps, exact implicit
    updates vs the true gradient, Proposition 2.1 on the first block."""
    cfg = parse_config("compare", argv)
    res = run_compare(cfg)
    print(f"wrote {cfg.out}/summary.md, results.json, compare.jsonl and {len(res['figures'])} figures")


def _export(argv: list[str]) -> None:
    """Write a run (any kept step) as a Hugging Face folder that transformers loads."""
    cfg = _tyro(ExportConfig, argv, "metareason export")
    print(f"wrote {run_export(cfg)}")


def _reproduce(argv: list[str]) -> None:
    """Every experiment of the paper with its seeds, a verdict per claim, one report (--budget, --only)."""
    cfg = parse_config("reproduce", argv)
    report = run_reproduce(cfg)
    failed = json.loads((report.parent / "report.json").read_text())["failed"]
    print(f"wrote {report} and {report.parent / 'report.json'}")
    if failed:
        print(f"metareason: {len(failed)} unit(s) failed ({', '.join(failed)}); their claims are not measured; "
              "see report.md", file=sys.stderr)
        raise SystemExit(1)


COMMANDS = {"selfcheck": _selfcheck, "train": _train, "rl": _rl, "eval": _eval, "probe": _probe, "demo": _demo,
            "compare": _compare, "export": _export, "reproduce": _reproduce}


def _message(err: BaseException) -> str:
    """What is wrong, in one line (an OSError as "STRERROR: FILENAME")."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return _one_line(f"{err.filename}: {err.strerror}")
    return _one_line(err) or type(err).__name__


def main(argv: list[str] | None = None) -> None:
    """`metareason [--debug] COMMAND [FLAGS...]`. Bad input (`BAD_INPUT`) prints one line,
    `metareason: <what is wrong>`, on stderr and exits with code 2; an interrupt exits with 130.
    `--debug` (anywhere on the line) or METAREASON_DEBUG=1 shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("\n".join(f"  {name:10s} {fn.__doc__}" for name, fn in COMMANDS.items()))
        raise SystemExit(0 if argv else 2)
    try:
        if argv[0] not in COMMANDS:
            raise ConfigError(f"unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; --help lists them)")
        if os.environ.get("METAREASON_COORDINATOR") or os.environ.get("METAREASON_DISTRIBUTED") == "1":
            # several hosts: join JAX's distributed runtime before any computation (arguments from
            # METAREASON_* or, with METAREASON_DISTRIBUTED=1 alone, detected on TPU pods and SLURM)
            initialize_distributed()
        COMMANDS[argv[0]](argv[1:])
    except KeyboardInterrupt:
        if debug:
            raise
        print("metareason: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BAD_INPUT as err:
        if debug:
            raise
        print(f"metareason: {_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
