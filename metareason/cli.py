"""`metareason <command>`: the command line. Each command is a dataclass config (tyro turns
its fields and docstrings into flags and help); the work lives in library functions."""

from __future__ import annotations

import sys

import tyro

from metareason.selfcheck import SelfCheck, run_selfcheck

COMMANDS = {
    "selfcheck": (SelfCheck, run_selfcheck),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()}, args=argv,
        description="metareason: LLM reasoning as meta-learning, measured in JAX.")
    for cls, run in COMMANDS.values():
        if type(config) is cls:
            run(config)
            return


if __name__ == "__main__":
    main()
