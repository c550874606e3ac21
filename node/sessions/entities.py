"""Entity tags inferred from what a session does (SPEC-004 §5), deterministically, no model calls.

A normalised hook event (SPEC-004 §11.1) becomes facts: files read and modified (as
``file:<repository>:<path>`` tags), hosts reached (``host:<name>``: fetch URLs, URLs and
ssh/scp/rsync targets in shell commands, the remotes of git push/pull/fetch), git activity, and a
short description of the action. Shell commands are parsed for these only; the command text is
never kept (it may hold secrets), only the program and git subcommand appear in the action.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from .gitinfo import Locator, normalize_remote

GIT_ACTIVITY = ("commit", "push", "pull", "fetch", "checkout", "switch", "merge", "rebase")
GIT_REMOTE_OPS = ("push", "pull", "fetch")
_URL_HOST = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/\s'\"]*@)?([A-Za-z0-9.-]+)")
_SEPARATORS = re.compile(r"\s*(?:&&|\|\||;|\||\n)\s*")
_SSH_OPTS_WITH_VALUE = set("bcDEeFIiJLlmOopQRSWw")
_GIT_OPTS_WITH_VALUE = {"-C", "-c", "--git-dir", "--work-tree", "--namespace"}
_HOST_OK = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


def file_tag(repository: str, path: str) -> str:
    return f"file:{repository}:{path}"


def repo_tag(repository: str) -> str:
    return f"repo:{repository}"


def branch_tag(repository: str, branch: str) -> str:
    return f"branch:{repository}@{branch}"


def host_tag(host: str) -> str:
    return f"host:{host.lower()}"


def tag_label(tag: str) -> str:
    """How a tag reads in a sentence: ``src/app.py``, ``repo github.com/o/r``, ``host x.org``."""
    kind, _, rest = tag.partition(":")
    if kind == "file":
        return rest.rpartition(":")[2] or rest
    if kind == "branch":
        repo, _, branch = rest.rpartition("@")
        return f"branch {branch} of {repo}"
    return f"{kind} {rest}"


@dataclass
class Facts:
    """What one event tells about its session."""

    reads: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    git: list[str] = field(default_factory=list)
    git_dirs: list[str] = field(default_factory=list)
    action: str = ""

    @property
    def tags(self) -> list[str]:
        return [*self.reads, *self.modified, *(host_tag(h) for h in self.hosts)]


def infer(ev: dict[str, Any], locator: Locator) -> Facts:
    """Facts of a normalised event (only tool events carry any)."""
    facts = Facts()
    action = ev.get("action", "other")
    paths = [p for p in ev.get("paths", []) if isinstance(p, str)]
    located = [locator.locate(p) for p in paths]
    facts.repositories = sorted({repo for repo, _ in located if repo != "local"})
    files = [file_tag(repo, rel) for repo, rel in located if rel]
    names = [rel if repo != "local" else os.path.basename(rel) for repo, rel in located if rel]
    if action == "edit":
        facts.modified = files
        facts.action = "edited " + ", ".join(names[:3]) if names else "edited files"
    elif action in ("read", "search"):
        facts.reads = files
        verb = "read" if action == "read" else "searched"
        facts.action = f"{verb} " + ", ".join(names[:3]) if names else verb
    elif action == "fetch":
        host = url_host(ev.get("url", ""))
        if host:
            facts.hosts.append(host)
        facts.action = f"fetched {host}" if host else "fetched a URL"
    elif action == "shell":
        shell_facts(ev.get("command", ""), ev.get("cwd", ""), locator, facts)
    elif ev.get("tool"):
        facts.action = f"used {ev['tool']}"[:200]
    facts.action = facts.action[:200]
    return facts


def url_host(url: str) -> str:
    m = _URL_HOST.search(url or "")
    host = m.group(1).lower().strip(".") if m else ""
    return host if host and _HOST_OK.match(host) else ""


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=False, posix=True)
    except ValueError:
        return command.split()


def shell_facts(command: str, cwd: str, locator: Locator, facts: Facts) -> None:
    """Hosts, git activity and a one-phrase action from a shell command line."""
    programs: list[str] = []
    for m in _URL_HOST.finditer(command or ""):
        host = m.group(1).lower().strip(".")
        if _HOST_OK.match(host) and host not in facts.hosts:
            facts.hosts.append(host)
    for part in _SEPARATORS.split(command or ""):
        words = _words(part)
        while words and (
            ("=" in words[0] and not words[0].startswith("-"))
            or words[0] in ("sudo", "env", "time", "nohup", "command", "exec")
        ):
            words = words[1:]
        if not words:
            continue
        program = os.path.basename(words[0])
        args = words[1:]
        if program in ("ssh", "mosh", "sftp"):
            _add_host(facts, _ssh_target(args))
            programs.append(program)
        elif program in ("scp", "rsync"):
            for arg in args:
                m = re.match(r"^(?:[^@/\s]+@)?([A-Za-z0-9.-]+):", arg)
                if m and not arg.startswith(("/", ".")):
                    _add_host(facts, m.group(1))
            programs.append(program)
        elif program == "git":
            sub, directory, rest = _git_subcommand(args, cwd)
            programs.append(f"git {sub}" if sub else "git")
            if sub in GIT_ACTIVITY:
                facts.git.append(sub)
                facts.git_dirs.append(directory)
            if sub in GIT_REMOTE_OPS:
                _add_host(facts, _git_remote_host(rest, directory, locator))
        else:
            programs.append(program)
    facts.action = ("ran " + "; ".join(dict.fromkeys(programs))) if programs else "ran a command"


def _add_host(facts: Facts, host: str | None) -> None:
    if host:
        host = host.lower()
        if _HOST_OK.match(host) and host not in facts.hosts:
            facts.hosts.append(host)


def _ssh_target(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = len(arg) == 2 and arg[1] in _SSH_OPTS_WITH_VALUE
            continue
        return arg.rpartition("@")[2].partition(":")[0] or None
    return None


def _git_subcommand(args: list[str], cwd: str) -> tuple[str, str, list[str]]:
    directory = cwd
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _GIT_OPTS_WITH_VALUE and i + 1 < len(args):
            if arg == "-C":
                directory = os.path.join(directory, args[i + 1])
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg, directory, args[i + 1:]
    return "", directory, []


def _git_remote_host(rest: list[str], directory: str, locator: Locator) -> str | None:
    remote = next((a for a in rest if not a.startswith("-")), "origin")
    if "://" in remote or re.match(r"^[^/\s]+@[^/\s]+:", remote):
        url = remote
    else:
        info = locator.repo_for_dir(os.path.normpath(directory)) if directory else None
        url = info.remote_url(remote) if info else None
    if not url:
        return None
    normalised = normalize_remote(url)
    if normalised.startswith("/"):
        return None  # a remote on this machine's file system reaches no host
    return normalised.split("/", 1)[0].partition(":")[0]
