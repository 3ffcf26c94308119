"""README.md's code blocks are tests.

Every ```python block runs as written, each in a fresh namespace and a fresh temporary working
directory (every block is self-contained: it imports and builds what it uses). Every shell command
in a ```bash block that runs `metareason ...` (also after `&&`) is parsed by that command's own
parser, without running it: `metareason.cli.parse_config` for train / rl / eval / probe, the
command's tyro config for the others (lines ending in `--help` must print help and exit 0).

A block is skipped only by a marker comment on the line right before its fence:
`<!-- readme-test: skip (REASON) -->` (something CI lacks: a real Hugging Face model, a GPU, a
TPU pod), or `<!-- readme-NAME-example: TEST runs the next block ... -->` for a block another test
runs (tests/inner/test_readme_meta.py). `test_skipped_blocks_are_the_listed_ones` lists every
skip; a new one must be added there.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")
ELSEWHERE = re.compile(r"<!--\s*readme-[\w-]+-example:\s*(?P<test>\S+)")

#: Blocks skipped by a `readme-test: skip` marker, by (language, first line of code): the reason.
#: (Blocks another test runs are listed too, and their test file must exist.)
EXPECTED_SKIPS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # why it is not run here, or None
    elsewhere: str | None = None  # the test file that runs it instead

    @property
    def id(self) -> str:
        return f"{self.lang}-L{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced code blocks of README.md (indented fences included, their code dedented)."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(2)
        j = i + 1
        while not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        code = textwrap.dedent("\n".join(lines[start + 1:j])) + "\n"
        before = lines[start - 1] if start else ""
        skip = elsewhere = None
        if s := SKIP.search(before):
            skip = s.group("reason")
        elif e := ELSEWHERE.search(before):
            skip = f"runs in {e.group('test')}"
            elsewhere = e.group("test")
        blocks.append(Block(lang, start + 1, code, skip, elsewhere))
        i = j + 1
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python" and b.skip is None]
BASH = [b for b in BLOCKS if b.lang == "bash" and b.skip is None]


def _ansi_c(word: str) -> str:
    """bash's $'...' quoting, decoded (\\n, \\t, \\\\, \\')."""
    return re.sub(r"\$'((?:[^'\\]|\\.)*)'",
                  lambda m: shlex.quote(m.group(1).encode().decode("unicode_escape")), word)


def command_lines(code: str) -> list[list[str]]:
    """argv of every `metareason ...` command in a bash block: continuation lines joined, comments
    dropped, `&&` / `;` chains split."""
    joined = re.sub(r"\\\n", " ", code)
    out = []
    for line in joined.splitlines():
        words = shlex.split(_ansi_c(line), comments=True)
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w in ("&&", ";", "||"):
                if cmd and cmd[0] == "metareason":
                    out.append(cmd[1:])
                cmd = []
            else:
                cmd.append(w)
    return out


def parse_command(argv: list[str]):
    """The config `metareason ARGV` would run with (tyro's parser; nothing runs)."""
    import tyro

    from metareason import cli
    from metareason.demo import DemoConfig
    from metareason.runs.export import ExportConfig
    from metareason.selfcheck import SelfCheck
    from metareason.studies.compare import CompareConfig

    other = {"selfcheck": SelfCheck, "demo": DemoConfig, "compare": CompareConfig, "export": ExportConfig}
    assert set(cli.COMMANDS) == {"train", "rl", "eval", "probe", "reproduce"} | set(other), "a command without a parser here"
    command, args = argv[0], argv[1:]
    if command in other:
        return tyro.cli(other[command], args=args, prog=f"metareason {command}")
    return cli.parse_config(command, args)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(block.code, f"{README}:{block.line}", "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, {"__name__": f"readme_L{block.line}"})


@pytest.mark.parametrize("block", BASH, ids=[b.id for b in BASH])
def test_bash_commands_parse(block):
    for argv in command_lines(block.code):
        if "--help" in argv:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exit_:
                parse_command(argv)
            assert exit_.value.code == 0 and "usage: metareason" in buf.getvalue(), argv
        else:
            cfg = parse_command(argv)
            assert cfg is not None, argv
            assert "\\n" not in str(getattr(cfg, "think_prefix", "")), f"a literal backslash-n reaches {argv}"


def test_skipped_blocks_are_the_listed_ones():
    not_run = [b for b in BLOCKS if b.skip is not None]
    print(f"{len(not_run)} README block(s) not run here:", *(f"{b.id}: {b.skip}" for b in not_run), sep="\n  ")
    skipped = {(b.lang, b.code.splitlines()[0]): b.skip for b in not_run if b.elsewhere is None}
    assert skipped == EXPECTED_SKIPS
    for b in not_run:
        if b.elsewhere is not None:
            assert (README.parent / b.elsewhere).is_file(), f"{b.id}: {b.elsewhere} does not exist"
            assert "README" in (README.parent / b.elsewhere).read_text(), f"{b.elsewhere} does not read README.md"
    assert len(PYTHON) >= 8 and len(BASH) >= 6  # the parser found the blocks
    assert sum(len(command_lines(b.code)) for b in BASH) >= 15


def test_command_lines_are_read_as_bash_reads_them():
    code = ("python -m venv .venv && . .venv/bin/activate && metareason demo  # comment\n"
            "metareason train --init m --think-prefix $'<think>\\n' \\\n    --out runs/x\n")
    assert command_lines(code) == [["demo"], ["train", "--init", "m", "--think-prefix", "<think>\n", "--out", "runs/x"]]
    blocks = readme_blocks("a\n<!-- readme-test: skip (needs a GPU) -->\n  ```python\n  x = 1\n  ```\n```bash\nls\n```\n")
    assert [(b.lang, b.line, b.code, b.skip) for b in blocks] == [("python", 3, "x = 1\n", "needs a GPU"),
                                                                  ("bash", 6, "ls\n", None)]
