"""The documentation's commands exist: every `maia ...` line in docs/ and the README parses
with the real CLI parser (command, subcommands and every --option), so a renamed or removed
command fails here instead of in a reader's terminal."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from node.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```(?:sh|bash|console)\n(.*?)```", re.S)  # output blocks are ```text


def documented_commands() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for block in BLOCK.findall(path.read_text()):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip()
                for part in re.split(r"&&|;", line):
                    part = part.strip()
                    m = re.match(r"^(?:\S*/)?maia\s+(.*)$", part)
                    if m:
                        out.append((path.name, m.group(1)))
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for a in parser._actions for opt in a.option_strings}


COMMANDS = documented_commands()


def test_the_docs_document_commands():
    assert len(COMMANDS) >= 20  # the walk really found the guides' commands


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_documented_command_exists(doc: str, command: str):
    tokens = shlex.split(command.replace("...", "X"))
    parser = build_parser()
    options = _options(parser)
    path: list[str] = []
    for token in tokens:
        if token == "--":
            break  # end of maia's options: the rest belongs to the wrapped program (maia run)
        if token.startswith("--"):
            assert token.split("=")[0] in options, f"{doc}: option {token} of `maia {command}`"
            continue
        subs = _subparsers(parser)
        if token in subs:
            parser = subs[token]
            path.append(token)
            options |= _options(parser)
        elif subs and not path:
            pytest.fail(f"{doc}: `maia {command}`: {token!r} is not a maia command")
        elif subs and _requires_subcommand(parser):
            pytest.fail(f"{doc}: `maia {command}`: {token!r} is not a subcommand of {path}")
    assert path, f"{doc}: `maia {command}` names no command"


def _requires_subcommand(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) and a.required for a in parser._actions)
