"""Keys and seals of a backup repository (SPEC-002 §2.2, §2.3, §2.4, §6.1).

passphrase --argon2id--> KEK --SecretBox--> master key (random, stored wrapped in repo.json)
master --keyed BLAKE2b--> content key (encrypts every object) and naming key (names chunks).
Changing the passphrase only re-wraps the master key; no chunk is touched. Names are keyed
hashes, so a stolen drive's file names say nothing about the content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import msgpack
import nacl.pwhash
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from .format import BackupError, WrongPassphrase

_A = nacl.pwhash.argon2id
KDF_LIMITS = {
    "moderate": (_A.OPSLIMIT_MODERATE, _A.MEMLIMIT_MODERATE),
    "interactive": (_A.OPSLIMIT_INTERACTIVE, _A.MEMLIMIT_INTERACTIVE),
}
SALT_LEN = _A.SALTBYTES  # 16
KEY_LEN = SecretBox.KEY_SIZE  # 32
SEAL_OVERHEAD = SecretBox.NONCE_SIZE + SecretBox.MACBYTES  # 24 + 16 per object


def check_kdf_limits(opslimit: int, memlimit: int) -> None:
    """Refuse limits below INTERACTIVE (too weak) or above SENSITIVE (a resource trap)."""
    if not (_A.OPSLIMIT_INTERACTIVE <= opslimit <= _A.OPSLIMIT_SENSITIVE
            and _A.MEMLIMIT_INTERACTIVE <= memlimit <= _A.MEMLIMIT_SENSITIVE):
        raise BackupError(
            f"key-derivation limits opslimit={opslimit} memlimit={memlimit} are outside the "
            "range maia-node accepts (INTERACTIVE to SENSITIVE)"
        )


def derive_kek(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    check_kdf_limits(opslimit, memlimit)
    return _A.kdf(KEY_LEN, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def wrap(kek: bytes, secret: bytes) -> bytes:
    return bytes(SecretBox(kek).encrypt(secret))


def unwrap(kek: bytes, wrapped: bytes, what: str) -> bytes:
    try:
        return SecretBox(kek).decrypt(wrapped)
    except (CryptoError, ValueError, TypeError):
        raise WrongPassphrase(f"wrong passphrase for {what}") from None


@dataclass(frozen=True)
class RepoKeys:
    """The two subkeys every repository operation uses. ``repr`` shows nothing secret."""

    content: bytes
    naming: bytes

    @classmethod
    def from_master(cls, master: bytes) -> RepoKeys:
        def sub(person: bytes) -> bytes:
            return hashlib.blake2b(b"", key=master, person=person, digest_size=32).digest()

        return cls(sub(b"maia-bk-enc"), sub(b"maia-bk-name"))

    def __repr__(self) -> str:
        return "RepoKeys(<secret>)"

    def seal(self, plaintext: bytes) -> bytes:
        """nonce ‖ XSalsa20-Poly1305 ciphertext, with a fresh random nonce."""
        return bytes(SecretBox(self.content).encrypt(plaintext))

    def open(self, sealed: bytes) -> bytes:
        """Decrypt, or raise CryptoError when the MAC does not hold (tampered or truncated)."""
        return SecretBox(self.content).decrypt(sealed)

    def name(self, payload: bytes) -> str:
        """Keyed BLAKE2b-256 of the (uncompressed) content, lowercase hex."""
        return hashlib.blake2b(payload, key=self.naming, digest_size=32).hexdigest()


def new_master() -> bytes:
    return os.urandom(KEY_LEN)


# -- the device key's inner seal (SPEC-002 §6.1) ------------------------------------------------
def seal_device_key(key_file: bytes, passphrase: bytes) -> bytes:
    """Seal the key file under its own passphrase, so a cached repository key alone never
    reveals it. At least MODERATE limits, whatever the repository uses."""
    ops, mem = KDF_LIMITS["moderate"]
    salt = os.urandom(SALT_LEN)
    box = wrap(derive_kek(passphrase, salt, ops, mem), key_file)
    return msgpack.packb({"v": 1, "salt": salt, "opslimit": ops, "memlimit": mem, "box": box},
                         use_bin_type=True)


def unseal_device_key(sealed: bytes, passphrase: bytes) -> bytes:
    try:
        blob = msgpack.unpackb(sealed, raw=False)
        if blob["v"] != 1:
            raise ValueError("unknown version")
        salt, ops, mem, box = blob["salt"], blob["opslimit"], blob["memlimit"], blob["box"]
    except Exception as exc:
        raise BackupError(f"the backed-up device key is damaged ({exc})") from None
    if ops < KDF_LIMITS["moderate"][0] or mem < KDF_LIMITS["moderate"][1]:
        raise BackupError("the backed-up device key is sealed with limits below MODERATE")
    return unwrap(derive_kek(passphrase, salt, ops, mem), box, "the backed-up device key")
