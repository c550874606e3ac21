"""Pairing test helpers: the SPEC-005 §12.5-§12.6 wire contract written from the SPEC (not
imported from node.mesh.pairing.member, so the real ``maia pair`` is checked against the text),
and a CLI process whose stdin can be a real terminal (a pty), as ``maia pair`` asks its user on
one."""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import threading
import time

from spake2 import SPAKE2_A, SPAKE2_B


# -- SPEC-005 §12.5, §12.6 ---------------------------------------------------------------------
def spake(code: str, *, new_key: bytes, member_key: bytes, member: bool):
    side = SPAKE2_B if member else SPAKE2_A
    return side(b"maia-pair-v2:" + code.encode(), idA=new_key, idB=member_key)


def commit_to(nonce: bytes) -> bytes:
    return hashlib.blake2b(b"maia-pair-commit-v1" + nonce, digest_size=32).digest()


def transcript(new_key, member_key, pake_new, pake_member, commit, n_member) -> bytes:
    return hashlib.blake2b(b"maia-pair-transcript-v2" + new_key + member_key + pake_new
                           + pake_member + commit + n_member, digest_size=32).digest()


def mac_member(k: bytes, t: bytes) -> bytes:
    return hashlib.blake2b(t, digest_size=32, key=k, person=b"maia-pair-member").digest()


def mac_new(k: bytes, t: bytes, n_new: bytes) -> bytes:
    return hashlib.blake2b(t + n_new, digest_size=32, key=k, person=b"maia-pair-newdev").digest()


def sas(new_key: bytes, member_key: bytes, n_new: bytes, n_member: bytes) -> str:
    d = hashlib.blake2b(b"maia-sas-v1" + new_key + member_key + n_new + n_member,
                        digest_size=8).digest()
    n = int.from_bytes(d, "big") % 1_000_000
    return f"{n // 1000:03d} {n % 1000:03d}"


async def play_member(channel, code: str, own_key: bytes) -> dict:
    """Answer a new device's ``pair`` frame as a member that knows ``code`` (or guesses it),
    following the SPEC; returns what was received, the SAS and the device's reveal."""
    hello = await channel.recv()
    got = {"pair": hello}
    state = spake(code, new_key=channel.peer_key, member_key=own_key, member=True)
    pake_member = state.start()
    k = state.finish(hello["pake"])
    n_member = os.urandom(32)
    t = transcript(channel.peer_key, own_key, hello["pake"], pake_member, hello["commit"],
                   n_member)
    await channel.send({"t": "pair_pake", "pake": pake_member, "nonce": n_member,
                        "proof": mac_member(k, t)})
    reveal = await channel.recv()
    got["reveal"] = reveal
    if isinstance(reveal, dict) and reveal.get("t") == "pair_reveal":
        got["sas"] = sas(channel.peer_key, own_key, reveal["nonce"], n_member)
        got["proof_ok"] = reveal["proof"] == mac_new(k, t, reveal["nonce"])
    return got


async def play_new_device(channel, code: str, own_key: bytes, name: str) -> dict:
    """Pair with a member as a new device that knows ``code``, up to both SAS screens."""
    n_new = os.urandom(32)
    commit = commit_to(n_new)
    state = spake(code, new_key=own_key, member_key=channel.peer_key, member=False)
    pake_new = state.start()
    await channel.send({"t": "pair", "name": name, "pake": pake_new, "commit": commit})
    reply = await channel.recv()
    k = state.finish(reply["pake"])
    t = transcript(own_key, channel.peer_key, pake_new, reply["pake"], commit, reply["nonce"])
    assert reply["proof"] == mac_member(k, t)
    await channel.send({"t": "pair_reveal", "nonce": n_new, "proof": mac_new(k, t, n_new)})
    return {"sas": sas(own_key, channel.peer_key, n_new, reply["nonce"])}


# -- processes -----------------------------------------------------------------------------------
class Proc:
    """A CLI process whose output lines we read as they come and whose stdin we answer; with
    ``tty=True`` its stdin is a pseudo-terminal, as a user's would be."""

    def __init__(self, argv: list[str], *, tty: bool = False) -> None:
        self._master = None
        stdin = subprocess.PIPE
        if tty:
            self._master, slave = os.openpty()
            stdin = slave
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        if tty:
            os.close(slave)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buf = ""
        while True:
            chunk = self.p.stdout.read(1)
            if not chunk:
                break
            buf += chunk
            # a prompt ends without a newline: hand it over as soon as it is complete
            if chunk == "\n" or buf.endswith("[y/N] "):
                self.lines.put(buf)
                buf = ""
        if buf:
            self.lines.put(buf)

    def expect(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} not seen; output so far: {''.join(self.seen)}")

    def answer(self, text: str) -> None:
        if self._master is not None:
            os.write(self._master, (text + "\n").encode())
        else:
            self.p.stdin.write(text + "\n")
            self.p.stdin.flush()

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            code = self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        if self._master is not None:
            os.close(self._master)
            self._master = None
        return code, "".join(self.seen)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


def sas_of(line: str) -> str:
    return line.rsplit(":", 1)[1].strip()
