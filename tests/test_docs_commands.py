"""Every ``ssmad ...`` command line shown in README.md and docs/*.md parses with the real parser.

Only parsing is checked (placeholders such as RUN or /data/mvtec_ad are fine): a renamed or removed
flag, a wrong choice or a missing required option in the documentation fails here, naming the file
and line. Commands are taken from fenced shell code blocks; a logical line may continue with a
trailing backslash, start with a ``$ `` prompt, end with a comment, chain commands with ``&&``,
``||``, ``;`` or ``|``, set environment variables first, or run ``python -m ssmad`` or
``torchrun ... -m ssmad``.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from ssmad.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCES = ("", "bash", "sh", "shell", "console", "zsh")
SEPARATORS = ("&&", "||", ";", "|", "&")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class DocCommand:
    """One ``ssmad`` invocation in a document: where it is and its arguments after ``ssmad``."""

    source: str
    line: int
    argv: tuple[str, ...]


def documented_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, logical line) of every shell fenced block; continuations joined."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    shell = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        match = FENCE.match(raw)
        if fence is None:
            if match:
                fence, shell = match.group(1), match.group(2).lower() in SHELL_FENCES
            continue
        if raw.strip().startswith(fence):
            fence = None
            continue
        if not shell:
            continue
        start, head = pending if pending else (number, "")
        joined = head + raw
        if joined.endswith("\\"):
            pending = (start, joined[:-1] + " ")
        else:
            pending = None
            lines.append((start, joined))
    return lines


def ssmad_arguments(line: str) -> list[list[str]]:
    """The argument lists after ``ssmad`` of each command in one logical shell line."""
    stripped = line.strip()
    if stripped.startswith("$ "):
        stripped = stripped[2:]
    lexer = shlex.shlex(stripped, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for tokens in segments:
        while tokens and ENV_ASSIGNMENT.match(tokens[0]):
            tokens = tokens[1:]
        if tokens and tokens[0] == "ssmad":
            found.append(tokens[1:])
        elif "-m" in tokens:
            module_at = tokens.index("-m") + 1
            if module_at < len(tokens) and tokens[module_at] == "ssmad":
                found.append(tokens[module_at + 1 :])
    return found


def documented_commands() -> list[DocCommand]:
    """Every ssmad command of README.md and docs/*.md, in document order."""
    commands = []
    for path in documented_files():
        if not path.is_file():
            continue
        for number, line in shell_lines(path.read_text(encoding="utf-8")):
            for argv in ssmad_arguments(line):
                commands.append(DocCommand(str(path.relative_to(ROOT)), number, tuple(argv)))
    return commands


COMMANDS = documented_commands()


def test_the_extractor_handles_prompts_continuations_chains_comments_and_launchers():
    text = "\n".join([
        "Some prose: `ssmad ignored --inline`",
        "```bash",
        "$ ssmad train --data /d \\",
        "    --out runs/x   # a comment --bogus",
        "pip install -e . && SSMAD_WEIGHTS=w.pth OMP_NUM_THREADS=2 ssmad demo --out /tmp/d",
        "torchrun --nproc_per_node=2 -m ssmad train --data D --out R; echo done",
        'python -m ssmad predict RUN "line3/**/*.jpg" | tee log',
        "curl -F image=@a.png http://127.0.0.1:8000/v1/predict",
        "```",
        "```python",
        'import ssmad; ssmad.load("run")',
        "```",
    ])
    lines = shell_lines(text)
    assert [number for number, _ in lines] == [3, 5, 6, 7, 8]
    found = [argv for _, line in lines for argv in ssmad_arguments(line)]
    assert found == [
        ["train", "--data", "/d", "--out", "runs/x"],
        ["demo", "--out", "/tmp/d"],
        ["train", "--data", "D", "--out", "R"],
        ["predict", "RUN", "line3/**/*.jpg"],
    ]


def test_the_documents_show_every_subcommand():
    shown = {command.argv[0] for command in COMMANDS if command.argv}
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert shown == subcommands, f"not shown in any document: {sorted(subcommands - shown)}"


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.source}:{c.line}" for c in COMMANDS])
def test_documented_command_parses(command: DocCommand):
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(list(command.argv))
    except SystemExit:
        pytest.fail(f"{command.source}:{command.line}: ssmad {shlex.join(command.argv)}\n{errors.getvalue()}")
