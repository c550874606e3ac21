"""Every ``maia`` command that acts on a node answers alike whether the node runs or not (issue 12).

A command reaches the running node's API (``OnlineTarget``) or, with no node running, the store
itself (``OfflineTarget``); both call the same rules. This suite runs each scenario on two
identical meshes, one with its node running and one stopped, and asserts the same exit codes,
the same output and the same error sentences, the way one conformance suite runs over every
adapter. Ids and device ids are normalised (each mesh has its own).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from crdt import DeviceKey
from node.cli import main as cli_main
from tests.nodes import NodeProc, make_mesh

ENTRY_ID = re.compile(r"\b[a-z]+-\d{6}-[A-Z2-7]{10}\b")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+Z?")
MESH_ID = re.compile(r"\([0-9a-f]{16}\)")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Runner:
    """Runs ``maia`` in-process against one data dir; remembers what a scenario created."""

    def __init__(self, node: NodeProc, other: NodeProc) -> None:
        self.node, self.other = node, other
        self.names = {self.device_id(node): "<this device>", self.device_id(other): "<b>"}
        self.raw_out = ""  # the last command's output before normalising (to read ids)

    @staticmethod
    def device_id(node: NodeProc) -> str:
        return DeviceKey.load(node.data_dir / "keys" / "device.key").device_id

    def __call__(self, *args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["--data-dir", str(self.node.data_dir), *args])
        self.raw_out = out.getvalue()
        return Result(code, self.normal(out.getvalue()), self.normal(err.getvalue()))

    def normal(self, text: str) -> str:
        for device, name in self.names.items():
            text = text.replace(device, name).replace(device[:15], name)  # also as shortened
        text = MESH_ID.sub("(<mesh>)", text)
        return TIMESTAMP.sub("<time>", ENTRY_ID.sub("<id>", text))


Scenario = Callable[[Runner], Any]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def _json(result: Result) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


# -- memory: the rules are Memory's (node/memory/entries.py) -----------------------------------
@scenario
def memory_tag_with_a_space_is_refused(run: Runner) -> Any:
    return run("memory", "add", "x", "--tag", "two words")


@scenario
def memory_tag_given_twice_is_refused(run: Runner) -> Any:
    return run("memory", "add", "x", "--tag", "t", "--tag", "t")


@scenario
def memory_tag_too_long_is_refused(run: Runner) -> Any:
    return run("memory", "add", "x", "--tag", "t" * 65)


@scenario
def memory_empty_text_is_refused(run: Runner) -> Any:
    return run("memory", "add", "")


@scenario
def memory_unknown_id_is_not_found(run: Runner) -> Any:
    return [run("memory", cmd, "note-202601-AAAAAAAAAA") for cmd in ("show", "history", "delete")]


@scenario
def memory_malformed_id_is_not_found(run: Runner) -> Any:
    return run("memory", "show", "no such id")


@scenario
def memory_edit_without_a_change_is_refused(run: Runner) -> Any:
    return run("memory", "edit", "note-202601-AAAAAAAAAA")


@scenario
def memory_round_trip(run: Runner) -> Any:
    added = _json(run("memory", "add", "Herons nest in colonies", "--kind", "fact",
                      "--tag", "birds", "--json"))
    entry_id = json.loads(run.raw_out)["id"]
    steps = [
        run("memory", "list", "--tag", "birds"),
        run("memory", "search", "heron"),
        run("memory", "show", entry_id),
        run("memory", "edit", entry_id, "--add-tag", "spring", "--text", "Herons nest early"),
        run("memory", "edit", entry_id, "--add-tag", "bad tag"),
        run("memory", "show", entry_id),
    ]
    history = _json(run("memory", "history", entry_id, "--json"))
    steps += [run("memory", "delete", entry_id), run("memory", "show", entry_id)]
    return (sorted(added), added["kind"], added["tags"], steps,
            [(h["op"], h["verified"]) for h in history])


@scenario
def memory_import_checks_every_entry(run: Runner) -> Any:
    path = run.node.data_dir.parent / f"{run.node.name}-import.jsonl"
    path.write_text('{"text": "one", "tags": ["ok"]}\n{"text": "two", "tags": ["not ok"]}\n')
    refused = run("memory", "import", str(path))
    path.write_text('{"text": "one", "tags": ["ok"]}\nplain line\n')
    accepted = run("memory", "import", str(path))
    return refused, accepted.code, _json(run("memory", "list", "--tag", "ok", "--json"))[0]["text"]


# -- profile: the rules are crdt.identity.PROFILE_RULES ----------------------------------------
@scenario
def profile_set_get_and_clear(run: Runner) -> Any:
    return [
        run("profile", "set", "display_name=Ada", "timezone=Europe/Paris"),
        run("profile", "set", "email=not-an-address"),
        run("profile", "set", "locale=english please"),
        run("profile", "set", "display_name=" + "x" * 101),
        run("profile", "set", "nickname=Ada"),
        run("profile", "set", "timezone="),  # an empty value clears the field
        run("profile", "get", "--json"),
    ]


# -- the static peer list: node/mesh/peerlist.py -----------------------------------------------
@scenario
def peer_list_edits(run: Runner) -> Any:
    added = run("peer", "add", "127.0.0.1:9")
    return [
        run("peer", "add", "not-an-address"),
        (added.code, added.out.split(";")[0]),  # then: "the node dials it now" / "when it starts"
        sorted(p["address"] for p in _json(run("peers", "--json"))["peers"]),
        run("peer", "remove", "127.0.0.1:9"),
        run("peer", "remove", "127.0.0.1:9"),
        _json(run("peers", "--json"))["peers"],
    ]


# -- devices: node/devices/members.py over crdt.identity ---------------------------------------
@scenario
def device_errors(run: Runner) -> Any:
    stranger = DeviceKey.generate().device_id
    run.names[stranger] = "<stranger>"
    return [
        run("device", "revoke", "not-a-device-id"),
        run("device", "revoke", stranger),
        run("device", "revoke", run.device_id(run.node)),  # a device cannot revoke itself
        run("device", "add", "not-a-join-request", "--name", "x"),
    ]


@scenario
def device_revoke_and_list(run: Runner) -> Any:
    before = [(d["device_id"], d["status"], d["name"]) for d in
              _json(run("devices", "--json"))]
    revoked = run("device", "revoke", run.device_id(run.other), "--reason", "lost")
    again = run("device", "revoke", run.device_id(run.other))
    after = [(d["device_id"], d["status"]) for d in _json(run("device", "list", "--json"))]
    return before, revoked, again, after


# -- status: node/status.py --------------------------------------------------------------------
SHARED_STATUS = {"device_id", "name", "mesh", "members", "layers", "storage_by_device",
                 "memory_entries", "peers", "backup", "running"}


@scenario
def status_shares_its_keys_and_meaning(run: Runner) -> Any:
    st = _json(run("status", "--json"))
    text = run("status")
    assert set(st) >= SHARED_STATUS, SHARED_STATUS - set(st)
    lines = [line for line in text.out.splitlines()
             if line.split()[0] in ("Device", "Mesh", "Members", "Memory")]
    return (st["device_id"], st["name"], st["mesh"]["name"], len(st["members"]),
            sorted(st["layers"]), st["memory_entries"], text.code, lines)


# -- the two meshes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Any, Any]]]:
    """Each scenario's outcome on the running node and on the stopped one."""
    runs: dict[str, list[Any]] = {name: [] for name in SCENARIOS}
    for online in (True, False):
        root = tmp_path_factory.mktemp("online" if online else "offline")
        node, other = make_mesh(root, ["a", "b"])
        if online:
            node.start()
        try:
            run = Runner(node, other)
            for name, fn in SCENARIOS.items():
                runs[name].append(fn(run))
        finally:
            node.stop()
    yield {name: (got[0], got[1]) for name, got in runs.items()}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_online_and_offline_answer_alike(outcomes: dict[str, tuple[Any, Any]], name: str) -> None:
    online, offline = outcomes[name]
    assert online == offline


def test_the_refusals_are_the_rules_own_sentences(outcomes: dict[str, tuple[Any, Any]]) -> None:
    """The suite compares real answers: the refusals happened, with the rule's words."""
    tag = outcomes["memory_tag_with_a_space_is_refused"][0]
    assert tag.code == 1 and "'two words' is not a tag" in tag.err
    profile = outcomes["profile_set_get_and_clear"][0]
    assert profile[0].code == 0 and profile[1].code == 1 and "email" in profile[1].err
    assert json.loads(profile[-1].out) == {"display_name": "Ada"}
    peers = outcomes["peer_list_edits"][0]
    assert peers[0].code == 1 and "is not HOST:PORT" in peers[0].err
    assert peers[4].code == 1 and "is not a static peer" in peers[4].err
    devices = outcomes["device_errors"][0]
    assert [r.code for r in devices] == [1, 1, 1, 1]
    assert "<stranger> is not in this mesh" in devices[1].err
    assert "cannot revoke itself" in devices[2].err
    revoke = outcomes["device_revoke_and_list"][0]
    assert revoke[1].code == 0 and ("<b>", "revoked") in revoke[3]
    assert revoke[2].code == 1 and "already revoked" in revoke[2].err
