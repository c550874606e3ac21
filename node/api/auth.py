"""Who is calling: the local API token file and the pluggable authenticator chain.

Today the only credential is the local token, a secret stored on disk that
only the node's own user can read (so "can read the file" means "is this user
on this device").  SPEC-004 adds session tokens with object-level
authorisation; they plug in as another :class:`Authenticator` yielding a
``Principal(kind="session", ...)`` without touching the middleware.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from aiohttp import web

from crdt import fsync_path

log = logging.getLogger(__name__)

PrincipalKind = Literal["local", "session"]

TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, stored on ``request[PRINCIPAL_KEY]`` (key name "principal").

    ``id`` keys the rate limiter and, for sessions, object-level authorisation;
    it is an identifier, never the credential itself.
    """

    kind: PrincipalKind
    id: str
    # SPEC-003 §6.7: what a session may do beyond its own objects; the local kind holds all
    scopes: frozenset[str] = frozenset()

    def holds(self, scope: str) -> bool:
        return self.kind == "local" or scope in self.scopes


@runtime_checkable
class Authenticator(Protocol):
    """One kind of credential.

    ``authenticate`` returns a Principal when it recognises and accepts the
    request's credential, or None when the credential is not its kind or is
    wrong, so the next authenticator in the chain gets a chance.  It may raise
    :class:`~node.api.problem.Problem` (401/403) to give a specific reason,
    for example an expired session.
    """

    async def authenticate(self, request: web.Request) -> Principal | None: ...


def bearer_token(request: web.BaseRequest) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None.

    The scheme is matched case-insensitively (RFC 9110 §11.1).
    """
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials or None


class LocalTokenAuthenticator:
    """Accepts the node's local API token; every holder is the same local principal."""

    PRINCIPAL = Principal(kind="local", id="local")

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the local API token must have at least {MIN_TOKEN_CHARS} characters")
        self._token = token.encode("utf-8")

    def __repr__(self) -> str:
        # Never let the token reach a log line through repr().
        return f"{type(self).__name__}(token=<redacted>)"

    async def authenticate(self, request: web.Request) -> Principal | None:
        presented = bearer_token(request)
        if presented is None:
            return None
        # Constant-time comparison so response timing reveals nothing about
        # how much of a guessed token was right.
        if hmac.compare_digest(presented.encode("utf-8", "replace"), self._token):
            return self.PRINCIPAL
        return None


class TokenFileError(PermissionError):
    """The token file exists but is unsafe or unusable; the node must not start."""


def load_or_create_token(path: Path) -> str:
    """Return the local API token stored at ``path``, creating it if missing.

    A new token is 32 random bytes, URL-safe base64, written with mode 0600
    (its parent directory is created 0700).  An existing file that group or
    others can access, that another user owns, that is not a regular file, or
    that is empty is refused with :class:`TokenFileError`: a token others can
    read authenticates nobody.
    """
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; make the intent explicit.
        os.chmod(path.parent, 0o700)
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if _publish_token(path, token):
        log.info("created local API token file %s", path)
        return token
    # Another process created it first; use theirs so both agree.
    return _read_token(path)


def _read_token(path: Path) -> str:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TokenFileError(f"cannot open token file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "r", encoding="utf-8") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise TokenFileError(
                f"token file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise TokenFileError(f"token file {path} is owned by another user")
        token = fh.read().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"token file {path} does not hold a usable token")
    return token


def _publish_token(path: Path, token: str) -> bool:
    """Atomically create ``path`` holding ``token``; False if it already exists.

    The token is written to a private temporary file first and then hard-linked
    into place, so no reader ever sees a partly written token and two racing
    creators cannot both win.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
        fsync_path(path.parent)  # the new name survives a power loss (SPEC-001 §9.4)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
