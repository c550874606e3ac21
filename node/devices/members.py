"""The mesh's devices as the owner sees them: list, find by id, enrol, revoke.

The one place these decisions are made; the HTTP routes and the offline CLI target both call
them, so ``maia device ...`` answers the same with the node running or stopped. The signing
and the roster rules themselves live in ``crdt`` (SPEC-005 §5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdt import (
    Repo,
    device_id,
    enrol_device,
    normalize_device_id,
    parse_join_request,
    revoke_device,
)


class NoSuchDevice(LookupError):
    def __str__(self) -> str:
        return f"{self.args[0]} is not in this mesh"


class CannotEnrol(ValueError):
    """The join request is malformed, or its device cannot be admitted."""


class CannotRevoke(ValueError):
    """The revocation breaks a roster rule (this device, a kept entry that does not exist)."""


def list_devices(repo: Repo, last_seen: Mapping[bytes, float | None] | None = None) -> list[dict]:
    """Members first, then revoked devices, each group by name (the same order whoever asks:
    the roster's own order depends on the order its certificates arrived in)."""
    roster = repo.roster
    seen = last_seen or {}
    names = {c.body["subject"]: c.body["name"] for c in roster.certs.values()
             if c.kind == "endorse"}
    out = [
        {"device_id": device_id(k), "name": n, "status": "member",
         "this_device": k == repo.key.public_key, "last_seen": seen.get(k)}
        for k, n in sorted(roster.members.items(), key=lambda kn: (kn[1], device_id(kn[0])))
    ]
    out += [
        {"device_id": device_id(k), "name": names.get(k, ""), "status": "revoked",
         "this_device": False, "last_seen": seen.get(k),
         "revoked_at": roster.revoked_info[k].body["at"] if k in roster.revoked_info else None}
        for k in sorted(roster.revoked, key=lambda k: (names.get(k, ""), device_id(k)))
    ]
    return out


def find_device(repo: Repo, text: str) -> bytes:
    """The public key of a member or revoked device by its id as typed (DeviceIdError if the
    id itself is malformed, NoSuchDevice if no device of this mesh has it)."""
    wanted = normalize_device_id(text)
    # ever: a founder that a thief revoked first sees nobody as a member until it revokes the
    # thief, and must still be able to name it (SPEC-005 §5.4)
    for key in [*repo.roster.members, *repo.roster.revoked, *repo.roster.ever]:
        if device_id(key) == wanted:
            return key
    raise NoSuchDevice(wanted)


def enrol(repo: Repo, request: str, name: str) -> dict[str, Any]:
    """Admit the device of a join request; the answer carries the invitation it needs."""
    try:
        subject = parse_join_request(request)
        invitation = enrol_device(repo, subject, name)
    except ValueError as exc:
        raise CannotEnrol(str(exc)) from None
    return {"device_id": device_id(subject), "invitation": invitation}


def revoke(repo: Repo, device: str, *, keep: list[str] | None = None, keep_all: bool = False,
           reason: str = "") -> dict[str, Any]:
    """Revoke a device for good: a signed tombstone that cuts it off now."""
    subject = find_device(repo, device)
    try:
        cert = revoke_device(repo, subject, keep=keep, keep_all=keep_all, reason=reason)
    except ValueError as exc:
        raise CannotRevoke(str(exc)) from None
    return {"device_id": device_id(subject), "revoked": True, "cutoff": cert.cutoff_summary(),
            "kept": cert.body["kept"]}
