"""Which repository and branch a path belongs to, read straight from ``.git`` (SPEC-004 §2.4).

No ``git`` process is ever started: ``.git/HEAD`` names the branch, ``.git/config`` the
``origin`` remote, and a worktree's ``.git`` file points (``gitdir:``) at its private git dir,
whose ``commondir`` points at the shared one. The repository id is the normalised origin URL
(``github.com/owner/repo``), or ``local:<worktree top level>`` without a remote (SPEC-004 §1).
Stdlib only.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

_REMOTE_SECTION = re.compile(r'^\[\s*remote\s+"([^"]+)"\s*\]$')
_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?([^:/\s]+):(?!//)(.+)\Z")
_DEFAULT_PORTS = {"ssh": "22", "git+ssh": "22", "https": "443", "http": "80", "git": "9418"}


@dataclass(frozen=True, slots=True)
class RepoInfo:
    """A worktree: its top-level directory, repository id, git dirs and current branch."""

    root: str
    repository: str
    branch: str
    git_dir: str
    common_dir: str

    def remote_url(self, name: str) -> str | None:
        return remote_urls(self.common_dir).get(name)


def normalize_remote(url: str) -> str:
    """``git@GitHub.com:Owner/Repo.git`` -> ``github.com/Owner/Repo``: host lower case; scheme,
    user, default port and ``.git`` removed. A local path stays a path (without ``.git``)."""
    url = url.strip()
    host, path = "", url
    if "://" in url:
        scheme, _, rest = url.partition("://")
        authority, _, path = rest.partition("/")
        authority = authority.rpartition("@")[2]
        host, _, port = authority.partition(":")
        if port and port != _DEFAULT_PORTS.get(scheme.lower()):
            host = f"{host}:{port}"
        if scheme.lower() == "file":
            host, path = "", "/" + path
    else:
        m = _SCP_LIKE.match(url)
        if m and not os.path.isabs(url):
            host, path = m.group(1), m.group(2)
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    if not host:
        return path
    return f"{host.lower()}/{path.lstrip('/')}"


def remote_urls(common_dir: str) -> dict[str, str]:
    """``{remote name: url}`` from a git config file (first url of each remote)."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(common_dir, "config"), encoding="utf-8", errors="replace") as fh:
            section = None
            for line in fh:
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("["):
                    m = _REMOTE_SECTION.match(line)
                    section = m.group(1) if m else None
                    continue
                if section is None:
                    continue
                key, sep, value = line.partition("=")
                if sep and key.strip().lower() == "url" and section not in out:
                    out[section] = value.strip().strip('"')
    except OSError:
        pass
    return out


def read_branch(git_dir: str) -> str:
    """The checked-out branch, or the first 12 hex digits of a detached HEAD ("" if unknown)."""
    try:
        with open(os.path.join(git_dir, "HEAD"), encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096).strip()
    except OSError:
        return ""
    if head.startswith("ref:"):
        ref = head[4:].strip()
        return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
    return head[:12]


def _git_dirs(top: str, dot_git: str) -> tuple[str, str] | None:
    if os.path.isdir(dot_git):
        return dot_git, dot_git
    try:
        with open(dot_git, encoding="utf-8", errors="replace") as fh:
            first = fh.read(4096).strip()
    except OSError:
        return None
    if not first.startswith("gitdir:"):
        return None
    git_dir = first[len("gitdir:"):].strip()
    if not os.path.isabs(git_dir):
        git_dir = os.path.normpath(os.path.join(top, git_dir))
    common = git_dir
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as fh:
            rel = fh.read(4096).strip()
        common = os.path.normpath(os.path.join(git_dir, rel))
    except OSError:
        pass
    return git_dir, common


def find_repo(path: str) -> RepoInfo | None:
    """The worktree holding ``path`` (a file that may not exist yet, or a directory)."""
    current = os.path.abspath(path)
    if not os.path.isdir(current):
        current = os.path.dirname(current)
    for _ in range(256):
        dot_git = os.path.join(current, ".git")
        if os.path.lexists(dot_git):
            dirs = _git_dirs(current, dot_git)
            if dirs is not None:
                git_dir, common = dirs
                origin = remote_urls(common).get("origin")
                repository = normalize_remote(origin) if origin else f"local:{current}"
                return RepoInfo(current, repository, read_branch(git_dir), git_dir, common)
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None


class Locator:
    """Maps absolute paths to ``(repository, path relative to the worktree)``, with a cache.

    The node calls it on every hook event, so worktree lookups are cached per directory for
    ``ttl`` seconds; the branch is re-read from HEAD on demand (it changes under git switch).
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, RepoInfo | None]] = {}

    def repo_for_dir(self, directory: str) -> RepoInfo | None:
        now = time.monotonic()
        hit = self._cache.get(directory)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        info = find_repo(directory)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[directory] = (now, info)
        return info

    def locate(self, path: str) -> tuple[str, str]:
        """``(repository, relative POSIX path)``; outside any worktree ``("local", abs path)``."""
        path = os.path.normpath(path)
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        info = self.repo_for_dir(directory)
        if info is None:
            return "local", path
        rel = os.path.relpath(path, info.root)
        if rel == "." or rel.startswith(".."):
            return info.repository, "" if rel == "." else path
        return info.repository, PurePosixPath(*rel.split(os.sep)).as_posix()

    def invalidate(self) -> None:
        self._cache.clear()
