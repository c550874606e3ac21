"""Which peers may be sent prompts for which cortex (SPEC-006 006.6.7).

Unit tests over a real Runtime store (HostApprovals), then three real nodes: a thief's member
key advertising the desktop's cortex as local and idle, after the learning window, receives no
prompt until the owner approves it on that node.
"""

from __future__ import annotations

from pathlib import Path

from crdt import Store
from node.routing.trust import HostApprovals

DESKTOP, THIEF = b"\x01" * 32, b"\x02" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _approvals(root: Path, clock: Clock, learning: float = 600.0) -> tuple[Store, HostApprovals]:
    store = Store(root, layers=("runtime",))
    env, db = store.runtime_db("kv")
    return store, HostApprovals(env, db, learning_seconds=learning, clock=clock)


def test_pairs_seen_while_learning_are_approved_and_kept_across_restarts(tmp_path) -> None:
    """006.6.7: during the window a peer's cortex is approved as it is seen, and stays approved
    after a restart; a pair first seen after the window is pending; the window is counted
    from the first start, not from each one."""
    clock = Clock()
    store, approvals = _approvals(tmp_path, clock)
    assert approvals.allows(DESKTOP, "claude")
    clock.now += 601
    assert not approvals.allows(THIEF, "claude")
    assert not approvals.allows(DESKTOP, "gpt")  # a new name of a known device waits too
    assert set(approvals.pending) == {(THIEF, "claude"), (DESKTOP, "gpt")}
    store.close()
    store, again = _approvals(tmp_path, clock)
    try:
        assert again.allows(DESKTOP, "claude") and not again.learning()
        assert not again.allows(THIEF, "claude")
        again.approve(THIEF, "claude")
        assert again.allows(THIEF, "claude") and (THIEF, "claude") not in again.pending
    finally:
        store.close()
    store, third = _approvals(tmp_path, clock)
    try:
        assert third.approved(THIEF, "claude")
    finally:
        store.close()


def test_with_no_window_nothing_is_approved_by_itself(tmp_path) -> None:
    clock = Clock()
    store, approvals = _approvals(tmp_path, clock, learning=0)
    try:
        assert not approvals.allows(DESKTOP, "claude")
        assert (DESKTOP, "claude") in approvals.pending
    finally:
        store.close()


def test_a_thiefs_cortex_gets_no_prompt_until_the_owner_approves_it(tmp_path) -> None:
    """SPEC-006 006.6.7, found by an attacker's read: a stolen laptop (a member) advertising the
    desktop's `claude` as local and idle took the prompts for `claude` of every node that did
    not define it. Past the learning window (here none), neither is sent a prompt until the
    owner approves it on this node; approved, the desktop answers and the thief's model
    server never sees a prompt; `maia cortex list` says how to approve the other."""
    from tests.fake_llm_server import FakeLLM
    from tests.nodes import cli_out, make_mesh, wait_for
    from tests.routing_helpers import chat, configure, models

    fd, ft = FakeLLM("desktop-model").start(), FakeLLM("thief-model").start()
    a, desk, thief = make_mesh(tmp_path, ["a", "desk", "thief"])
    configure(a, routing={"learning_seconds": 0})
    configure(desk, cortex={"claude": {"kind": "reasoning", "model": "openai/claude",
                                       "api_base": fd.api_base, "remote": True}})
    configure(thief, cortex={"claude": {"kind": "reasoning", "model": "openai/claude",
                                        "api_base": ft.api_base, "max_concurrency": 256}})
    try:
        for node in (a, desk, thief):
            node.start()
        desk.add_peer(a)
        thief.add_peer(a)
        ids = {n.name: n.device_id() for n in (desk, thief)}
        wait_for(lambda: len(models(a).get("claude", {}).get("maia", {}).get("hosts", [])) == 2,
                 timeout=30, what="a to hear both hosts of claude")
        hosts = {h["device_id"]: h for h in models(a)["claude"]["maia"]["hosts"]}
        assert {h["approved"] for h in hosts.values()} == {False}
        assert chat(a, "claude").status in (503, 404)  # no approved host: nobody is asked
        listed = cli_out(a.data_dir, "cortex", "list")
        assert "NOT APPROVED" in listed and f"maia cortex allow {ids['thief'][:15]}" in listed
        cli_out(a.data_dir, "cortex", "allow", ids["desk"][:15], "claude")
        for _ in range(5):
            answer = chat(a, "claude")
            assert answer.status == 200 and answer.host == ids["desk"]
        assert ft.stats()["requests"] == 0 and fd.stats()["requests"] == 5
        assert chat(a, "cortex/reasoning").host == ids["desk"]  # kind routing too
        cli_out(a.data_dir, "cortex", "allow", ids["thief"][:15])
        assert chat(a, "claude").host == ids["thief"]  # the owner's choice, now a candidate
    finally:
        for node in (a, desk, thief):
            node.stop()
        fd.stop()
        ft.stop()
