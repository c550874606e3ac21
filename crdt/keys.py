"""Device keys and device ids: the Ed25519 identity a device proves and signs with.

The private key lives in one file (mode 0600) inside the data dir and never leaves the device:
nothing here serialises it anywhere else, and ``DeviceKey.__repr__`` hides it so it cannot leak
into a log line by accident.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

KEY_FILE_MODE = 0o600
_KEY_MAGIC = b"maia-ed25519-v1\n"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class KeyFileError(Exception):
    """The key file is missing, malformed or readable by others (a user-facing mistake)."""


class DeviceKey:
    """This device's Ed25519 key pair. Signs; the public half is the device's name everywhere."""

    __slots__ = ("_signing", "public_key")

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing
        self.public_key: bytes = bytes(signing.verify_key)

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(SigningKey.generate())

    @property
    def device_id(self) -> str:
        return device_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte signature over ``message``."""
        return self._signing.sign(message).signature

    def __repr__(self) -> str:  # never print the secret
        return f"DeviceKey({self.device_id})"

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the key with mode 0600, refusing to replace an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        try:
            os.write(fd, _KEY_MAGIC + base64.b64encode(bytes(self._signing)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, KEY_FILE_MODE)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # the new name survives a power loss
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: Path) -> DeviceKey:
        """Read the key, refusing one that group or others could read or that is malformed."""
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise KeyFileError(f"no device key at {path}; run 'maia init' first") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"device key {path} has permissions {stat.S_IMODE(st.st_mode):o}; it must be "
                f"readable by its owner only (run: chmod 600 {path})"
            )
        return cls.from_key_file_bytes(path.read_bytes(), str(path))

    @classmethod
    def from_key_file_bytes(cls, raw: bytes, source: str) -> DeviceKey:
        """Parse the bytes of a key file (e.g. unsealed from a backup, SPEC-002 §8.5)."""
        if not raw.startswith(_KEY_MAGIC):
            raise KeyFileError(f"{source} is not a maia device key")
        try:
            seed = base64.b64decode(raw[len(_KEY_MAGIC) :].strip(), validate=True)
            return cls(SigningKey(seed))
        except Exception as exc:
            raise KeyFileError(f"{source} is damaged and cannot be read as a device key") from exc


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature over ``message``."""
    try:
        VerifyKey(public_key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


# -- device ids ------------------------------------------------------------------------------
def _luhn32(chars: str) -> str:
    """Luhn mod-32 check character, as Syncthing uses, so one mistyped character is caught."""
    factor, total, n = 1, 0, 32
    for ch in chars:
        addend = factor * _B32.index(ch)
        factor = 1 if factor == 2 else 2
        addend = (addend // n) + (addend % n)
        total += addend
    return _B32[(n - total % n) % n]


def device_id(public_key: bytes) -> str:
    """Human-checkable id: SHA-256 of the key, base32, a check char per 13 chars, groups of 7."""
    b32 = base64.b32encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    assert len(b32) == 52
    with_checks = "".join(b32[i : i + 13] + _luhn32(b32[i : i + 13]) for i in range(0, 52, 13))
    return "-".join(with_checks[i : i + 7] for i in range(0, 56, 7))


class DeviceIdError(ValueError):
    """A device id that is malformed or fails its check characters."""


def normalize_device_id(text: str) -> str:
    """Accept ids typed with spaces, dashes or lower case; reject typos via the check chars."""
    cleaned = "".join(ch for ch in text.upper() if ch not in " -")
    if len(cleaned) != 56 or any(ch not in _B32 for ch in cleaned):
        raise DeviceIdError(f"'{text}' is not a device id (56 base32 characters in 8 groups)")
    for i in range(0, 56, 14):
        block = cleaned[i : i + 14]
        if _luhn32(block[:13]) != block[13]:
            raise DeviceIdError(f"device id '{text}' has a typo (check character mismatch)")
    return "-".join(cleaned[i : i + 7] for i in range(0, 56, 7))
