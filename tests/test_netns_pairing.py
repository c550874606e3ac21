"""Pairing on a real (namespaced) LAN: the new device finds the member by mDNS, both prove the
code, both screens show the same six digits, both users confirm (SPEC-005 §12)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from scripts.netns_lan import NamespaceLan, namespaces_available
from tests.nodes import NodeProc, cli, wait_for
from tests.pairing_helpers import Proc, sas_of

OK, WHY = namespaces_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not OK, reason=WHY)]
API_PORT, PEER_PORT = 17421, 17422


def maia(data_dir, *args, lan=None, host=None) -> list[str]:
    argv = [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args]
    return lan.command(host, argv) if lan else argv


@pytest.fixture
def lan():
    with NamespaceLan("maiap", ["a", "n", "m", "x"]) as lan:
        yield lan


@pytest.fixture
def member(lan, tmp_path):
    a_dir = tmp_path / "a"
    assert cli(a_dir, "init", "--new-mesh", "--name", "a") == 0
    a = NodeProc(a_dir, "a", host=lan.addresses["a"], port=API_PORT, peer_port=PEER_PORT,
                 peer_listen="0.0.0.0", prefix=lan.command("a", []),
                 env={"MAIA_DISCOVERY": "1"})
    a.start()
    yield a
    a.stop()


def _new_device(tmp_path, name: str):
    d = tmp_path / name
    assert cli(d, "init", "--name", name) == 0
    return d


def test_pairing_happy_path_over_mdns_then_sync(lan, member, tmp_path):
    """SPEC-005 §12.5-§12.7: code proved by both + matching SAS + both users' yes -> the new
    device is a member, receives Identity and Memory; the code is single use."""
    member.add_memory("from before the new device existed")
    n_dir = _new_device(tmp_path, "n")
    accept = Proc(maia(member.data_dir, "pair", "accept"))
    code = accept.expect("Pairing code:").split()[2]
    joiner = Proc(maia(n_dir, "pair", "--code", code, lan=lan, host="n"), tty=True)
    new_sas = sas_of(joiner.expect("other device shows"))
    member_sas = sas_of(accept.expect("screen must show"))
    assert new_sas == member_sas
    joiner.expect("Do both screens show the same number?")
    accept.expect("Do both screens show the same number?")
    joiner.answer("y")
    accept.answer("y")
    assert accept.finish()[0] == 0
    code_n, out = joiner.finish()
    assert code_n == 0, out
    assert "Joined mesh" in out
    # the code cannot be used twice
    again = _new_device(tmp_path, "x")
    res = subprocess.run(maia(again, "pair", f"{lan.addresses['a']}:{PEER_PORT}", "--code", code,
                              "--yes", lan=lan, host="x"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and ("used" in res.stderr or "closed" in res.stderr), res.stderr
    # the new device now syncs with the member over mDNS, no address typed anywhere
    n = NodeProc(n_dir, "n", host=lan.addresses["n"], port=API_PORT, peer_port=PEER_PORT,
                 peer_listen="0.0.0.0", prefix=lan.command("n", []),
                 env={"MAIA_DISCOVERY": "1"})
    n.start()
    try:
        wait_for(lambda: any(e["text"] == "from before the new device existed"
                             for e in n.entries()), timeout=30, what="n received memory")
        devices = {d["name"]: d["status"] for d in n.request("GET", "/v1/devices")["devices"]}
        assert devices == {"a": "member", "n": "member"}
    finally:
        n.stop()


def test_wrong_and_expired_codes_are_refused(lan, member, tmp_path):
    """SPEC-005 §12.4, §12.5: a wrong code is refused (the member's proof does not verify) and
    counts as an attempt; nothing is enrolled; an expired code is refused too."""
    n_dir = _new_device(tmp_path, "n")
    target = f"{lan.addresses['a']}:{PEER_PORT}"
    # The wrong-code attempt (a new Python process and a handshake) must fit in the window on a
    # loaded machine; then the test waits only for what is left of it.
    accept = Proc(maia(member.data_dir, "pair", "accept", "--ttl", "10"))
    accept.expect("Pairing code:")
    res = subprocess.run(maia(n_dir, "pair", target, "--code", "WXYZ-WXYZ", "--yes", lan=lan,
                              host="n"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "wrong_code" in res.stderr, res.stderr
    code = member.request("GET", "/v1/pairing")
    assert code["state"] == "open" and code["attempts"] == 1
    time.sleep(code["expires_in"] + 0.5)
    good = accept.seen[0].split()[2]
    res = subprocess.run(maia(n_dir, "pair", target, "--code", good, "--yes", lan=lan, host="n"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "expired" in res.stderr, res.stderr
    accept.p.kill()
    names = {d["name"] for d in member.request("GET", "/v1/devices")["devices"]}
    assert names == {"a"}


def test_man_in_the_middle_shows_different_numbers(lan, member, tmp_path):
    """SPEC-005 §12.6: a third device relaying the pairing, even one that knows the code, holds
    its own key, so the two screens show different numbers; the owner says no and nobody is
    enrolled."""
    n_dir = _new_device(tmp_path, "n")
    m_dir = _new_device(tmp_path, "m")
    accept = Proc(maia(member.data_dir, "pair", "accept"))
    code = accept.expect("Pairing code:").split()[2]
    relay = Proc(lan.command("m", [sys.executable, "-m", "tests.pairing_relay",
                                   str(m_dir / "keys" / "device.key"),
                                   f"{lan.addresses['m']}:{PEER_PORT}",
                                   f"{lan.addresses['a']}:{PEER_PORT}", code]))
    relay.expect("relay ready")
    joiner = Proc(maia(n_dir, "pair", f"{lan.addresses['m']}:{PEER_PORT}", "--code", code,
                       lan=lan, host="n"), tty=True)
    new_sas = sas_of(joiner.expect("other device shows"))
    member_sas = sas_of(accept.expect("screen must show"))
    assert new_sas != member_sas
    accept.expect("Do both screens show the same number?")
    accept.answer("n")
    assert accept.finish()[0] == 1
    code_n, out = joiner.finish()
    assert code_n == 1 and "refused" in out, out
    relay.kill()
    names = {d["name"] for d in member.request("GET", "/v1/devices")["devices"]}
    assert names == {"a"}
