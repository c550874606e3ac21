"""Pairing against rogues and refusals, on loopback (SPEC-005 §12.5-§12.7).

The new device is the real ``maia pair`` process, its stdin a terminal; the member is a real
node process; the rogue is an aiohttp server speaking the pairing protocol with its own key,
founded in the attacker's own mesh, and written from the SPEC's wire contract
(tests.pairing_helpers), recording every frame it receives.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from crdt.identity import enrol_device, open_repo, stored_mesh_id
from crdt.keys import DeviceKey
from node.datadir import locked_store
from node.transport import accept
from tests.nodes import NodeProc, cli, free_port, make_mesh, wait_for
from tests.pairing_helpers import Proc, play_member, sas_of

PAIRING_MESH = b"\x00" * 32


def maia(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args]


def mesh_of(data_dir: Path) -> bytes | None:
    with locked_store(data_dir) as store:
        return stored_mesh_id(store)


def members(node: NodeProc) -> dict[str, str]:
    return {d["name"]: d["status"] for d in node.request("GET", "/v1/devices")["devices"]}


class Rogue:
    """A member of the attacker's mesh answering ``/v1/pair``: it plays the member with its
    own guess of the code, then hands over an invitation signed by ``issuer_dir``'s key."""

    def __init__(self, key_dir: Path, issuer_dir: Path, code: str) -> None:
        self.key = DeviceKey.load(key_dir / "keys" / "device.key")
        self.issuer_dir, self.code = issuer_dir, code
        self.received: list[object] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/pair", self._pair)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    async def _pair(self, request: web.Request) -> web.StreamResponse:
        ws, channel = await accept(request, key=self.key, mesh_id=PAIRING_MESH)
        recording = _Recording(channel, self.received)
        try:
            await play_member(recording, self.code, self.key.public_key)
            await recording.recv()  # pair_confirm, if the device went that far
        except Exception:  # whatever the device did, try to enrol it anyway
            pass
        try:
            with locked_store(self.issuer_dir) as store:
                repo = open_repo(store, DeviceKey.load(self.issuer_dir / "keys" / "device.key"))
                invitation = enrol_device(repo, channel.peer_key, "victim")
            await channel.send({"t": "pair_welcome", "invitation": invitation})
            await asyncio.sleep(1)
        except Exception:  # the device may be gone already
            pass
        await channel.close()
        return ws

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class _Recording:
    """The rogue's channel, keeping every frame the new device sent."""

    def __init__(self, channel, log: list[object]) -> None:
        self.channel, self.log, self.peer_key = channel, log, channel.peer_key

    async def recv(self):
        frame = await self.channel.recv()
        self.log.append(frame)
        return frame

    async def send(self, frame) -> None:
        await self.channel.send(frame)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[NodeProc]:
    a_dir = tmp_path / "a"
    assert cli(a_dir, "init", "--new-mesh", "--name", "a") == 0
    a = NodeProc(a_dir, "a").start()
    yield a
    a.stop()


@pytest.fixture
def attacker(tmp_path: Path) -> tuple[Path, Path]:
    """The attacker's own mesh: founder f and member r (r is the one that answers)."""
    f, r = make_mesh(tmp_path / "attacker", ["f", "r"])
    return f.data_dir, r.data_dir


def new_device(tmp_path: Path, name: str = "n") -> Path:
    d = tmp_path / name
    assert cli(d, "init", "--name", name) == 0
    return d


def open_window(member: NodeProc) -> str:
    return member.request("POST", "/v1/pairing", {"ttl": 60})["code"]


def test_rogue_member_never_learns_the_code_and_the_device_joins_nothing(
    tmp_path, member, attacker
):
    """SPEC-005 §12.5: the owner typed the real member's code, but a rogue in another mesh
    answered. The code never crosses the wire: the rogue receives only a SPAKE2 message, a
    commitment and the device's refusal (no proof it could test guesses against); its proof
    does not verify, so the device refuses, accepts no invitation and stores no mesh id."""
    _, r_dir = attacker
    code = open_window(member)
    rogue = Rogue(r_dir, r_dir, code="WXYZ-WXYZ")  # it does not know the code: it guesses
    try:
        n_dir = new_device(tmp_path)
        joiner = Proc(maia(n_dir, "pair", rogue.address, "--code", code), tty=True)
        status, out = joiner.finish()
    finally:
        rogue.stop()
    wire = repr(rogue.received)
    for form in (code, code.replace("-", ""), code.lower(), code.encode().hex()):
        assert form not in wire, f"the rogue received the code ({form}): {wire}"
    assert status == 1 and "wrong_code" in out and "did not prove" in out, out
    kinds = [f.get("t") for f in rogue.received if isinstance(f, dict)]
    assert kinds == ["pair", "pair_error"], kinds  # no reveal, no proof, no confirmation
    assert set(rogue.received[0]) == {"t", "name", "pake", "commit"}
    assert mesh_of(n_dir) is None
    assert member.request("GET", "/v1/pairing")["attempts"] == 0  # the real window untouched


def _pair_with_rogue(tmp_path, rogue_dir, *, signer):
    """A new device pairs (--yes) with a rogue that knows the code and whose invitation's
    endorsement is signed by ``signer``'s key; returns the rogue, the device's data dir, and
    the command's exit status and output."""
    rogue = Rogue(rogue_dir, signer, code="RSTU-VWXY")
    try:
        n_dir = new_device(tmp_path)
        joiner = Proc(maia(n_dir, "pair", rogue.address, "--code", "RSTU-VWXY", "--yes"))
        status, out = joiner.finish()
    finally:
        rogue.stop()
    return rogue, n_dir, status, out


def test_invitation_endorsed_by_another_key_is_refused(tmp_path, attacker):
    """SPEC-005 §12.7: the device talks to r, which knows the code and completes every proof,
    but the endorsement that admits the device is signed by f, not by r: refused
    (`wrong_issuer`), nothing stored."""
    f_dir, r_dir = attacker
    rogue, n_dir, status, out = _pair_with_rogue(tmp_path, r_dir, signer=f_dir)
    assert status == 1 and "wrong_issuer" in out, out
    kinds = [f.get("t") for f in rogue.received if isinstance(f, dict)]
    assert kinds == ["pair", "pair_reveal", "pair_confirm"], kinds
    assert mesh_of(n_dir) is None


def test_same_rogue_endorsing_itself_is_accepted_when_both_confirm(tmp_path, attacker):
    """SPEC-005 §12.7, the control for the case above: the same exchange with the endorsement
    signed by the connected key itself is accepted (the refusal above is the issuer's)."""
    f_dir, r_dir = attacker
    _rogue, n_dir, status, out = _pair_with_rogue(tmp_path, r_dir, signer=r_dir)
    assert status == 0, out
    assert mesh_of(n_dir) == mesh_of(f_dir)


@pytest.mark.parametrize("who", ["new device", "owner"])
def test_either_user_saying_no_leaves_nothing_signed(tmp_path, member, who):
    """SPEC-005 §12.6, §12.7: both screens are confirmed by their user. When the new device's
    user answers "n" (after the owner already said yes) or the owner answers "n" (after the
    device said yes), nothing is signed on the member and nothing is stored on the device."""
    n_dir = new_device(tmp_path)
    owner = Proc(maia(member.data_dir, "pair", "accept"))
    code = owner.expect("Pairing code:").split()[2]
    joiner = Proc(maia(n_dir, "pair", f"127.0.0.1:{member.peer_port}", "--code", code), tty=True)
    assert sas_of(joiner.expect("other device shows")) == sas_of(owner.expect("must show"))
    joiner.expect("Do both screens show the same number? [y/N]")
    owner.expect("Do both screens show the same number? [y/N]")
    if who == "new device":
        owner.answer("y")
        owner.expect("Waiting for the new device's user")
        joiner.answer("n")
    else:
        joiner.answer("y")
        joiner.expect("Waiting for the other device's owner")
        owner.answer("n")
    owner_status, owner_out = owner.finish()
    status, out = joiner.finish()
    assert owner_status == 1 and "Nothing was added" in owner_out, owner_out
    assert status == 1 and "refused" in out, out
    assert mesh_of(n_dir) is None
    assert members(member) == {"a": "member"}
    window = member.request("GET", "/v1/pairing")
    assert window["state"] == "refused" and window["refused_by"] == who


def test_happy_path_with_yes_and_no_terminal(tmp_path, member):
    """SPEC-005 §12.6: without a terminal `maia pair` refuses to skip the comparison (before
    it connects: the window is untouched); with --yes a script pairs, the owner confirms, and
    the device joins the member's mesh, endorsed by the member."""
    n_dir = new_device(tmp_path)
    owner = Proc(maia(member.data_dir, "pair", "accept"))
    code = owner.expect("Pairing code:").split()[2]
    target = f"127.0.0.1:{member.peer_port}"
    res = subprocess.run(maia(n_dir, "pair", target, "--code", code), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "--yes" in res.stderr, res.stderr
    assert member.request("GET", "/v1/pairing")["attempts"] == 0
    joiner = Proc(maia(n_dir, "pair", target, "--code", code, "--yes"))
    assert "not compared" in joiner.expect("not compared")
    owner.expect("Do both screens show the same number? [y/N]")
    owner.answer("y")
    assert owner.finish()[0] == 0
    status, out = joiner.finish()
    assert status == 0 and "Joined mesh" in out, out
    assert mesh_of(n_dir).hex() == member.request("GET", "/v1/status")["mesh"]["id"]
    assert members(member) == {"a": "member", "n": "member"}


def test_five_wrong_guesses_close_the_window(tmp_path, member):
    """SPEC-005 §12.4, §12.5: each SPAKE2 exchange is one online guess; a wrong code counts as
    a failed attempt on the member, and after 5 the window is closed, even to the right code."""
    n_dir = new_device(tmp_path)
    code = open_window(member)
    target = f"127.0.0.1:{member.peer_port}"
    for _ in range(5):
        res = subprocess.run(maia(n_dir, "pair", target, "--code", "WXYZ-WXYZ", "--yes"),
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 1 and "wrong_code" in res.stderr, res.stderr
    window = wait_for(lambda: (w := member.request("GET", "/v1/pairing"))["state"] == "failed"
                      and w, what="the window closed")
    assert window["attempts"] == 5
    res = subprocess.run(maia(n_dir, "pair", target, "--code", code, "--yes"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "closed" in res.stderr, res.stderr
    assert mesh_of(n_dir) is None and members(member) == {"a": "member"}
