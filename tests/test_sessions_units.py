"""SPEC-004 pure parts, without a node: lease patterns and winners, tiers and budgets, entity
inference, git reading, the per-CLI adapters, the event log and the journal digest (real LMDB
and a real Memory layer in a temp dir)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.identity import create_mesh
from crdt.keys import DeviceKey
from crdt.store import Store
from node.memory import Memory
from node.sessions import leases, tiers
from node.sessions.adapters import base, claude, codex, gemini
from node.sessions.clock import NS, iso, mono_ns, now_ns, parse_iso
from node.sessions.entities import Facts, infer, shell_facts
from node.sessions.eventlog import EventLog
from node.sessions.gitinfo import Locator, find_repo, normalize_remote
from node.sessions.journal import Journal
from node.sessions.leases import Lease
from tests.sessions_helpers import claude as claude_payload
from tests.sessions_helpers import codex as codex_payload
from tests.sessions_helpers import codex_patch, git, make_repo
from tests.sessions_helpers import gemini as gemini_payload


# -- leases ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("src/app.py", "src/app.py", True),
    ("src/app.py", "src/other.py", False),
    ("src", "src/app.py", True),  # a directory covers its files
    ("src/**", "src/deep/x.py", True),
    ("src/*.py", "src/app.py", True),
    ("src/*.py", "docs/a.md", False),
    ("docs/*.md", "src/app.py", False),
    ("*.py", "src/app.py", True),  # literal prefix "" is a prefix of everything: conservative
    ("src/a*.py", "src/b.py", True),  # false overlap is allowed (prefix "src"), missed is not
    ("src/x/**", "src/y/**", False),
    ("**/test_*.py", "tests/test_a.py", True),
    ("a/?.txt", "a/b.txt", True),
])
def test_pattern_overlap_is_conservative(a: str, b: str, overlap: bool) -> None:
    """SPEC-004 §8.3: literal-match either way, or literal prefixes equal / path prefix; the
    relation is symmetric."""
    assert leases.patterns_overlap(a, b) is overlap
    assert leases.patterns_overlap(b, a) is overlap


def test_lease_covers_globs_and_directories() -> None:
    """SPEC-004 §8.5: a path matches a pattern when the glob matches it, or when the literal
    pattern names the path or a directory above it."""
    assert leases.covers("src/app.py", "src/app.py")
    assert leases.covers("src", "src/deep/app.py")
    assert not leases.covers("src", "srcx/app.py")
    assert leases.covers("src/**/*.py", "src/a/b/c.py")
    assert leases.covers("src/**/*.py", "src/c.py")
    assert not leases.covers("src/*.py", "src/a/c.py")
    assert leases.literal_prefix("src/mod/*.py") == "src/mod"
    assert leases.literal_prefix("*.py") == ""


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "src/../../x", "a\\b", "C:/x",
                                 "x" * 1025])
def test_bad_patterns_are_refused(bad: str) -> None:
    """SPEC-004 §8.7: at most 1,024 bytes, no '..' segment, never absolute."""
    with pytest.raises(leases.PatternError):
        leases.check_pattern(bad)
    assert leases.check_pattern("./src//app.py/") == "src/app.py"


def _lease(i: int, pattern: str, mode: str, granted: int, device: str, session: str) -> Lease:
    return Lease(id=f"{i:032x}", repository="github.com/o/r", pattern=pattern, mode=mode,
                 session=session, device=device, granted_ns=granted, deadline_ns=granted + 900 * NS)


def test_winner_rule_order_of_tie_breaks() -> None:
    """SPEC-004 §9.3: earlier granted_at wins; on a tie the lower device id (ASCII); then the
    lower lease id. Symmetric in its arguments."""
    t = 1_800_000_000 * NS
    early = _lease(9, "src/**", "exclusive", t, "ZZZ", "s" * 26)
    late = _lease(1, "src/a.py", "exclusive", t + 1, "AAA", "t" * 26)
    assert leases.winner(early, late) is early and leases.winner(late, early) is early
    tie_dev_a = _lease(9, "src/**", "exclusive", t, "AAA", "s" * 26)
    tie_dev_b = _lease(1, "src/a.py", "exclusive", t, "BBB", "t" * 26)
    assert leases.winner(tie_dev_b, tie_dev_a) is tie_dev_a
    tie_id_low = _lease(1, "src/**", "exclusive", t, "AAA", "s" * 26)
    tie_id_high = _lease(2, "src/a.py", "exclusive", t, "AAA", "t" * 26)
    assert leases.winner(tie_id_high, tie_id_low) is tie_id_low


_patterns = st.sampled_from(["src/a.py", "src/**", "src/*.py", "docs/x.md", "docs", "*.md",
                             "src/b/**", "tests/t.py"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_patterns, st.sampled_from(leases.MODES), st.integers(0, 3),
                          st.sampled_from(["AAA", "BBB", "CCC"]), st.integers(0, 3)),
                min_size=1, max_size=8), st.randoms())
def test_every_node_computes_the_same_leases_in_force(specs, rnd) -> None:
    """SPEC-004 §9.3: the outcome is a function of the set of records, whatever the order in
    which a node learned them; no two leases in force conflict."""
    t = 1_800_000_000 * NS
    known = [_lease(i, p, m, t + g, d, chr(ord("a") + s) * 26)
             for i, (p, m, g, d, s) in enumerate(specs)]
    kept, lost = leases.resolve(known, t)
    for _ in range(3):
        shuffled = list(known)
        rnd.shuffle(shuffled)
        again, lost_again = leases.resolve(shuffled, t)
        assert [x.id for x in again] == [x.id for x in kept]
        assert {(a.id, b.id) for a, b in lost_again} == {(a.id, b.id) for a, b in lost}
    for a, b in itertools.combinations(kept, 2):
        assert not leases.conflicting(a, b)
    for loser, winner in lost:
        assert leases.conflicting(loser, winner) and winner in kept


def test_expired_leases_are_not_in_force() -> None:
    """SPEC-004 §8.6: a lease stops being in force when its time runs out."""
    t = 1_800_000_000 * NS
    lease = _lease(1, "src/**", "exclusive", t, "AAA", "a" * 26)
    assert leases.resolve([lease], t + 899 * NS)[0] == [lease]
    assert leases.resolve([lease], t + 900 * NS)[0] == []


def test_lease_records_round_trip_and_reject_junk() -> None:
    """SPEC-004 §4.6, §8.1: announced records parse back; malformed ones are refused."""
    now = mono_ns()
    lease = dataclasses.replace(_lease(7, "src/**", "shared", 1_800_000_000 * NS, "AAA", "a" * 26),
                                deadline_ns=now + 900 * NS)
    back = Lease.from_record(lease.record(), now)
    assert dataclasses.replace(back, deadline_ns=lease.deadline_ns) == lease
    assert abs(back.deadline_ns - lease.deadline_ns) < 5 * NS // 1000
    for bad in ({**lease.record(), "pattern": "../x"}, {**lease.record(), "mode": "x"},
                {**lease.record(), "id": "zz"}, {**lease.record(), "granted_at": "yesterday"},
                {**lease.record(), "ttl_ms": -1}, {**lease.record(), "ttl_ms": "9"},
                "not a map"):
        with pytest.raises(ValueError):
            Lease.from_record(bad)


# -- tiers ----------------------------------------------------------------------------------------
def _rec(sid: str, tags: set[str], modified: set[str] = frozenset(), **kw) -> tiers.Record:
    return tiers.Record(id=sid, agent=kw.get("agent", "codex"), device="DEV-" + sid,
                        device_name=kw.get("device_name", "desktop"), task=kw.get("task", "t"),
                        tags=frozenset(tags | modified), modified=frozenset(modified),
                        last_active_ns=kw.get("at", 0))


def test_tier_selection_for_zero_one_two_shared_tags_and_same_file() -> None:
    """SPEC-004 §6.1: none for no shared tag, notice for one, detail for two or more, conflict
    when both modified the same file (whatever else is shared)."""
    f = "file:github.com/o/r:src/app.py"
    me = _rec("me", {"repo:github.com/o/r", "branch:github.com/o/r@main", "host:pypi.org"}, {f})
    others = {
        "none": _rec("none", {"repo:github.com/x/y"}),
        "notice": _rec("notice", {"repo:github.com/o/r", "branch:github.com/o/r@dev"}),
        "detail": _rec("detail", {"repo:github.com/o/r", "branch:github.com/o/r@main"}),
        "conflict": _rec("conflict", {"repo:github.com/x/y"}, {f}),
    }
    index = tiers.TagIndex()
    records = {"me": me, **others}
    for sid, rec in records.items():
        index.put(sid, rec.tags)
    got = {o.other.id: o.tier for o in tiers.overlaps(me, records, index)}
    assert got == {"notice": tiers.NOTICE, "detail": tiers.DETAIL, "conflict": tiers.CONFLICT}
    order = [o.other.id for o in tiers.overlaps(me, records, index)]
    assert order == ["conflict", "detail", "notice"]
    index.put("detail", {"repo:github.com/x/y"})  # tags change: the index follows
    records["detail"] = _rec("detail", {"repo:github.com/x/y"})
    assert "detail" not in {o.other.id for o in tiers.overlaps(me, records, index)}


def test_items_fit_their_tier_budget_and_the_total() -> None:
    """SPEC-004 §6.2, §6.3, §6.5: each item within its tier's budget (ceil(chars/4)); items
    that do not fit the total are dropped and a '+N more' line is added when it fits."""
    budget = tiers.Budget()
    f = "file:github.com/o/r:src/app.py"
    me = _rec("me", {"repo:github.com/o/r"}, {f}, agent="claude", device_name="laptop")
    long_task = "refactor the authentication layer " * 10
    ov_conflict = tiers.Overlap(_rec("o1", {"repo:github.com/o/r"}, {f}, task=long_task),
                                tiers.CONFLICT, [f], [f])
    ov_notice = tiers.Overlap(_rec("o2", {"repo:github.com/o/r"}, task=long_task),
                              tiers.NOTICE, ["repo:github.com/o/r"])
    conflict = tiers.render(me, ov_conflict, budget)
    notice = tiers.render(me, ov_notice, budget)
    assert tiers.estimate_tokens(conflict) <= 150 and "src/app.py" in conflict
    assert "DEV-o1" in conflict and "laptop" in conflict and "maia claim" in conflict
    assert tiers.estimate_tokens(notice) <= 30 and "\n" not in notice
    assert tiers.estimate_tokens("abcde") == 2
    hundred = "x" * 396  # "- " + 396 characters = 100 tokens
    text, included = tiers.assemble([hundred, hundred, hundred, notice], budget)
    assert included == [0, 1, 3]  # the third 100-token item does not fit: dropped, not cut
    assert tiers.estimate_tokens(text) <= budget.total
    assert text.endswith("(+1 more overlapping sessions: maia sessions)")
    small = tiers.Budget(total=40)
    text, included = tiers.assemble([conflict], small)
    assert text == "" and included == []


def test_budgets_come_from_config_and_bad_values_are_refused() -> None:
    """SPEC-004 §2.9, §6.2: [sessions.budget] overrides; non-positive values refuse to start."""
    from node.sessions.config import SessionsConfig

    cfg = SessionsConfig.from_table({"expires_after_s": 3, "budget": {"notice": 20}})
    assert cfg.expires_after_s == 3.0 and cfg.budget.notice == 20 and cfg.budget.total == 300
    for bad in ({"expires_after_s": 0}, {"budget": {"total": -1}}, {"heartbeat_s": "10"},
                {"budget": {"journal_min": 900}}, {"mystery": 1}):
        with pytest.raises(ValueError):
            SessionsConfig.from_table(bad)


# -- entities and git -----------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "repo_id"), [
    ("git@GitHub.com:Owner/Repo.git", "github.com/Owner/Repo"),
    ("https://user:pw@github.com/owner/repo.git", "github.com/owner/repo"),
    ("ssh://git@gitlab.example.org:22/group/sub/proj.git", "gitlab.example.org/group/sub/proj"),
    ("ssh://git@host.example:2222/x/y", "host.example:2222/x/y"),
    ("/srv/git/proj.git", "/srv/git/proj"),
    ("file:///srv/git/proj.git", "/srv/git/proj"),
])
def test_repository_ids_are_normalised_remotes(url: str, repo_id: str) -> None:
    """SPEC-004 §1: host lower case; scheme, user and .git removed."""
    assert normalize_remote(url) == repo_id


def test_git_is_read_from_files_including_worktrees(tmp_path: Path) -> None:
    """SPEC-004 §2.4, §5.1: repository and branch come from .git/HEAD and .git/config,
    following a worktree's gitdir: file; files get file:<repo>:<relative path> tags."""
    main = make_repo(tmp_path / "main", "git@github.com:o/r.git")
    (main / "README").write_text("x")
    git("-C", str(main), "add", "README")
    git("-C", str(main), "commit", "-q", "-m", "init")
    git("-C", str(main), "worktree", "add", "-q", "-b", "feature", str(tmp_path / "wt"))
    info = find_repo(str(tmp_path / "wt" / "src" / "new.py"))
    assert info is not None
    assert (info.repository, info.branch, info.root) == ("github.com/o/r", "feature",
                                                          str(tmp_path / "wt"))
    loc = Locator()
    assert loc.locate(str(tmp_path / "wt" / "src" / "a.py")) == ("github.com/o/r", "src/a.py")
    assert loc.locate(str(tmp_path / "elsewhere.txt")) == ("local", str(tmp_path / "elsewhere.txt"))
    bare = make_repo(tmp_path / "bare", None)
    assert find_repo(str(bare)).repository == f"local:{bare}"


def test_entities_from_tool_events(tmp_path: Path) -> None:
    """SPEC-004 §5.1, §5.2: files read and written, hosts from fetch URLs, ssh/scp targets,
    URLs in commands and git remotes; git activity; no model calls, no git process."""
    repo = make_repo(tmp_path / "r", "git@github.com:o/r.git")
    git("-C", str(repo), "remote", "add", "backup", "https://Backup.Example.org/o/r.git")
    loc = Locator()
    ev = {"event": "post_tool", "action": "edit", "tool": "Edit", "cwd": str(repo),
          "paths": [str(repo / "src" / "a.py"), str(tmp_path / "notes.txt")]}
    facts = infer(ev, loc)
    assert facts.modified == ["file:github.com/o/r:src/a.py", f"file:local:{tmp_path}/notes.txt"]
    assert facts.action == "edited src/a.py, notes.txt"
    facts = infer({"event": "post_tool", "action": "fetch", "tool": "WebFetch",
                   "url": "https://Docs.Python.org/3/library/", "cwd": str(repo)}, loc)
    assert facts.hosts == ["docs.python.org"]
    f = Facts()
    shell_facts("curl -s https://api.example.com/v1 | jq . && ssh -p 22 deploy@prod.example.net "
                "uptime; scp build.tgz me@files.example.org:/tmp/ ; git push backup main && "
                "git -C . commit -m 'x' && API_KEY=secret git fetch", str(repo), loc, f)
    assert set(f.hosts) == {"api.example.com", "prod.example.net", "files.example.org",
                            "backup.example.org", "github.com"}
    assert f.git == ["push", "commit", "fetch"]
    assert "secret" not in f.action and "git push" in f.action


# -- adapters -------------------------------------------------------------------------------------
def test_claude_code_payloads_normalise_and_answer_as_documented(tmp_path: Path) -> None:
    """SPEC-004 §11.1, §12.1, §12.6: tool_input.file_path / path / command / url; deny is
    hookSpecificOutput.permissionDecision 'deny' with a reason; context is additionalContext;
    Stop and SessionEnd answer nothing."""
    cwd = str(tmp_path)
    ev = claude.normalise("PreToolUse", claude_payload(
        "PreToolUse", "abc", cwd, tool_name="Edit",
        tool_input={"file_path": "src/x.py", "old_string": "a", "new_string": "b"}))
    assert ev["event"] == "pre_tool" and ev["action"] == "edit"
    assert ev["paths"] == [f"{cwd}/src/x.py"] and ev["cli_session_id"] == "abc"
    out = claude.render(ev, {"decision": "deny", "reason": "held"}, "PreToolUse")
    assert base.json.loads(out) == {"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": "deny",
        "permissionDecisionReason": "held"}}
    for tool, tool_input, key, value in [
        ("Read", {"file_path": "/a/b.py"}, "paths", ["/a/b.py"]),
        ("Grep", {"pattern": "x", "path": "/a"}, "paths", ["/a"]),
        ("Bash", {"command": "ls", "description": "list"}, "command", "ls"),
        ("WebFetch", {"url": "https://x.org/p", "prompt": "sum"}, "url", "https://x.org/p"),
        ("NotebookEdit", {"notebook_path": "/a/n.ipynb", "new_source": ""}, "paths",
         ["/a/n.ipynb"]),
    ]:
        ev = claude.normalise("PostToolUse", claude_payload("PostToolUse", "abc", cwd,
                                                            tool_name=tool, tool_input=tool_input))
        assert ev[key] == value, tool
    post = claude.render(ev, {"decision": "allow", "context": "hi"}, "PostToolUse")
    assert base.json.loads(post)["hookSpecificOutput"] == {"hookEventName": "PostToolUse",
                                                           "additionalContext": "hi"}
    stop = claude.normalise("Stop", claude_payload("Stop", "abc", cwd))
    assert claude.render(stop, {"decision": "allow", "context": "x"}, "Stop") == ""
    prompt = claude.normalise("UserPromptSubmit", claude_payload(
        "UserPromptSubmit", "abc", cwd, prompt="Fix the login bug\nthen tests"))
    assert prompt["event"] == "prompt" and prompt["prompt"].startswith("Fix the login")
    assert claude.normalise("Notification", {"hook_event_name": "Notification"}) is None


def test_codex_payloads_normalise_and_answer_as_documented(tmp_path: Path) -> None:
    """SPEC-004 §12.2, §12.6: apply_patch paths from Add/Update/Delete File and Move to lines
    in tool_input.command; Bash commands; Claude-shaped answers; last_assistant_message."""
    cwd = str(tmp_path)
    patch = codex_patch("*** Add File: docs/new.md", "+hello", "*** Update File: src/app.py",
                        "*** Move to: src/main.py", "@@", "-a", "+b", "*** Delete File: old.txt")
    ev = codex.normalise("PreToolUse", codex_payload(
        "PreToolUse", "th-1", cwd, tool_name="apply_patch", tool_input={"command": patch}))
    assert ev["action"] == "edit"
    assert ev["paths"] == [f"{cwd}/docs/new.md", f"{cwd}/src/app.py", f"{cwd}/src/main.py",
                           f"{cwd}/old.txt"]
    deny = base.json.loads(codex.render(ev, {"decision": "deny", "reason": "r"}, "PreToolUse"))
    assert deny["hookSpecificOutput"]["permissionDecision"] == "deny"
    bash = codex.normalise("PostToolUse", codex_payload(
        "PostToolUse", "th-1", cwd, tool_name="Bash", tool_input={"command": "pytest -q"}))
    assert bash["action"] == "shell" and bash["command"] == "pytest -q"
    stop = codex.normalise("Stop", codex_payload("Stop", "th-1", cwd,
                                                 last_assistant_message="All tests pass."))
    assert stop["message"] == "All tests pass."
    assert codex.render(stop, {"context": "x"}, "Stop") == ""
    assert "SessionEnd" not in codex.EVENTS  # Codex has none: the heartbeat process ends it


def test_gemini_payloads_normalise_and_answer_as_documented(tmp_path: Path) -> None:
    """SPEC-004 §12.3, §12.6: write_file/replace file_path, read_file path; BeforeTool deny is
    {"decision": "deny", "reason"}; no opinion is {}; AfterTool context is additionalContext."""
    cwd = str(tmp_path)
    ev = gemini.normalise("BeforeTool", gemini_payload(
        "BeforeTool", "g-1", cwd, tool_name="replace",
        tool_input={"file_path": f"{cwd}/src/a.py", "old_string": "a", "new_string": "b"}))
    assert ev["event"] == "pre_tool" and ev["paths"] == [f"{cwd}/src/a.py"]
    assert base.json.loads(gemini.render(ev, {"decision": "deny", "reason": "r"}, "BeforeTool")) \
        == {"decision": "deny", "reason": "r"}
    assert gemini.render(ev, {"decision": "allow"}, "BeforeTool") == "{}"
    assert gemini.render(ev, None, "BeforeTool") == "{}"
    read = gemini.normalise("AfterTool", gemini_payload(
        "AfterTool", "g-1", cwd, tool_name="read_file", tool_input={"path": f"{cwd}/README.md"}))
    assert read["action"] == "read" and read["paths"] == [f"{cwd}/README.md"]
    out = base.json.loads(gemini.render(read, {"context": "ctx"}, "AfterTool"))
    assert out == {"hookSpecificOutput": {"hookEventName": "AfterTool", "additionalContext": "ctx"}}
    fetch = gemini.normalise("AfterTool", gemini_payload(
        "AfterTool", "g-1", cwd, tool_name="web_fetch",
        tool_input={"prompt": "Summarise https://example.org/page please"}))
    assert fetch["url"] == "https://example.org/page"


def test_normalised_events_are_bounded(tmp_path: Path) -> None:
    """SPEC-004 §11.1: paths absolute and at most 64; text fields bounded."""
    payload = claude_payload("PostToolUse", "x" * 500, str(tmp_path), tool_name="Bash",
                             tool_input={"command": "y" * 10_000})
    ev = claude.normalise("PostToolUse", payload)
    assert len(ev["command"]) == base.MAX_COMMAND and len(ev["cli_session_id"]) == 200
    many = base.absolute(str(tmp_path), [f"f{i}" for i in range(100)] + [None, 3, "", "a\0b"])
    assert len(many) == 64 and all(p.startswith("/") for p in many)


# -- event log and journal (real LMDB, real Memory) -----------------------------------------------
def test_event_log_keys_order_prune_and_damage(tmp_path: Path) -> None:
    """SPEC-004 §3.1, §3.3, §3.4, §3.5: 8+4-byte keys in time order; buffered until flush;
    records older than the retention or beyond the cap go first; a damaged record is skipped."""
    store = Store(tmp_path)
    try:
        log = EventLog(store, "DEV", retain_ns=3600 * NS, max_records=5)
        t = 1_800_000_000 * NS
        for i in range(8):
            log.append("file_read", "s" * 26, {"i": i}, at_ns=t + i * NS)
        assert store.runtime_items("events") is not None
        assert [k for k, _ in store.runtime_items("events")] == []  # nothing before a flush
        log.flush()
        keys = [k for k, _ in store.runtime_items("events")]
        assert len(keys) == 8 and all(len(k) == 12 for k in keys) and keys == sorted(keys)
        env, db = store.runtime_db("events")
        with env.begin(write=True, db=db) as txn:
            txn.put(keys[6], b"\xc1 not msgpack")
        page, cursor = log.read(limit=3)
        assert [r["data"]["i"] for r in page] == [0, 1, 2] and cursor is not None
        rest, end = log.read(after=cursor, limit=100)
        assert [r["data"]["i"] for r in rest] == [3, 4, 5, 7] and end is None
        assert page[0]["at"] == iso(t) and page[0]["device"] == "DEV"
        assert log.prune(now=t + 7 * NS) == 3  # the cap of 5 drops the 3 oldest
        log.append("conflict", "s" * 26, at_ns=t + 3600 * NS + 5 * NS)
        assert log.prune(now=t + 3600 * NS + 5 * NS) == 2  # records older than an hour
        with pytest.raises(ValueError):
            log.append("made_up", "s")
    finally:
        store.close()


@pytest.fixture
def memory(tmp_path: Path):
    store = Store(tmp_path)
    repo = create_mesh(store, DeviceKey.generate(), "test mesh", "laptop")
    yield Memory(repo)
    store.close()


def test_journal_digest_order_budget_and_status(memory: Memory) -> None:
    """SPEC-004 §10.1, §10.3, §10.5: order open blockers, open todos, decisions, learnings,
    achievements, aspirations; newest first; each entry ≤ 200 chars; the digest reaches
    journal_min when enough exists and never exceeds journal_max; done items drop out."""
    j = Journal(memory)
    p = "github.com/o/r"
    assert j.digest(p, tiers.Budget()) == ""
    j.add("aspiration", "one day: plugins", p)
    j.add("achievement", "shipped v1", p)
    j.add("learning", "LMDB needs one writer", p)
    j.add("decision", "use msgpack for frames", p)
    todo = j.add("todo", "write the docs", p)
    j.add("blocker", "CI is red", p)
    j.add("decision", "other project", "github.com/x/y")
    digest = j.digest(p, tiers.Budget())
    kinds = [line.split("]")[0].lstrip("- [") for line in digest.splitlines()[1:]]
    assert kinds == ["blocker", "todo", "decision", "learning", "achievement", "aspiration"]
    assert "other project" not in digest
    assert todo["status"] == "open" and j.set_status(todo["id"], "done")["status"] == "done"
    assert "write the docs" not in j.digest(p, tiers.Budget())
    rnd = random.Random(4)
    for i in range(60):
        j.add(rnd.choice(["decision", "learning"]), f"entry {i} " + "word " * rnd.randint(5, 80), p)
    digest = j.digest(p, tiers.Budget())
    assert 300 <= tiers.estimate_tokens(digest) <= 500
    assert all(len(line) <= 200 + len("- [learning] ") for line in digest.splitlines()[1:])
    tight = j.digest(p, tiers.Budget(journal_min=50, journal_max=80))
    assert tiers.estimate_tokens(tight) <= 80


def test_timestamps_have_nine_fractional_digits() -> None:
    """SPEC-004 §1 (SPEC-001 §10.1): ISO-8601 UTC with exactly 9 fractional digits."""
    t = 1_764_068_587_123_456_789
    assert iso(t) == "2025-11-25T11:03:07.123456789Z"
    assert parse_iso(iso(t)) == t and parse_iso("2025-11-25T11:03:07Z") == t - 123_456_789


def test_a_node_with_a_bad_sessions_table_refuses_to_start(tmp_path: Path, capsys) -> None:
    """SPEC-004 §2.9: a timing that is not positive stops `maia up` with one sentence."""
    from tests.nodes import cli

    data = tmp_path / "d"
    assert cli(data, "init", "--new-mesh", "--name", "x") == 0
    with open(data / "config.toml", "a") as fh:
        fh.write("\n[sessions]\nheartbeat_s = -1\n")
    capsys.readouterr()
    assert cli(data, "up", "--port", "0", "--peer-port", "0") == 1
    assert "[sessions] heartbeat_s must be a positive number" in capsys.readouterr().err


def test_a_peer_lease_expires_from_its_arrival_never_from_the_peer_clock() -> None:
    """SPEC-004 §8.9: the deadline is arrival + min(ttl_ms - held_ms, 24 h), whatever the
    origin's granted_at and expires_at say (a clock a year ahead, or a day behind)."""
    arrived = mono_ns()
    year, day, wall = 365 * 86_400 * NS, 86_400 * NS, now_ns()
    ahead = {"id": "a" * 32, "repository": "r", "pattern": "src/**", "mode": "exclusive",
             "session": "s" * 26, "device": "D", "granted_at": iso(wall + year),
             "expires_at": iso(wall + year + 60 * NS), "ttl_ms": 60_000}
    lease = Lease.from_record(ahead, arrived)
    assert lease.deadline_ns == arrived + 60 * NS
    assert lease.in_force(arrived + 59 * NS) and not lease.in_force(arrived + 60 * NS)
    behind = {**ahead, "granted_at": iso(wall - day), "expires_at": iso(wall - day + 3600 * NS),
              "ttl_ms": 3_600_000}
    assert Lease.from_record(behind, arrived).in_force(arrived + 3599 * NS)
    assert Lease.from_record(behind, arrived, held_ms=600_000).deadline_ns == arrived + 3000 * NS
    huge = {**ahead, "ttl_ms": 10 * 86_400_000}
    assert Lease.from_record(huge, arrived).deadline_ns == arrived + leases.MAX_TTL_S * NS
    legacy = {k: v for k, v in ahead.items() if k != "ttl_ms"}  # expires - granted, capped
    assert Lease.from_record(legacy, arrived).deadline_ns == arrived + 60 * NS


def test_only_a_majority_of_peers_can_call_our_clock_the_outlier() -> None:
    """SPEC-004 §9.5: never refuse on one peer's word; a majority of two or more, agreeing on
    the direction, makes this node the outlier."""
    from node.sessions.mesh import own_clock_is_outlier

    assert not own_clock_is_outlier([])
    assert not own_clock_is_outlier([-86_400.0])  # one peer: who is wrong is unknown
    assert own_clock_is_outlier([-86_400.0, -86_399.5])  # both find us a day ahead
    assert own_clock_is_outlier([30.0, 31.0, 0.1])
    assert not own_clock_is_outlier([30.0, -30.0])  # they disagree with each other
    assert not own_clock_is_outlier([30.0, 0.2, 0.1])


def test_a_session_s_tags_stay_bounded_however_many_paths_an_agent_posts() -> None:
    """SPEC-004 §5.3, found by an attacker's read: an agent's session token posting thousands
    of distinct paths grew the session's tag map without end (every hook sorted all of it:
    192,000 tags cost 211 ms a hook and 800 MB). At most 256 are kept, the newest."""
    from node.sessions.registry import MAX_TAGS, Session

    s = Session(id="s1", agent="claude", pid=1, cwd="/r", repository="r", branch="main",
                task="", cli_session_id="c", device="d", device_name="laptop",
                started_ns=0, last_seen_ns=0)
    for step in range(40):
        s.touch_tags([f"file:src/m{step}_{i}.py" for i in range(64)], now=step + 1)
    assert len(s.tags) == MAX_TAGS
    newest = {f"file:src/m39_{i}.py" for i in range(64)}
    assert newest <= set(s.effective_tags(now=41))
    assert len(s.effective_tags(now=41)) <= MAX_TAGS
