"""SPEC-004 §13: `maia hooks install|uninstall` on real settings files (no node needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from node.sessions.install import RECORD_FILE
from tests.nodes import cli

USER_CLAUDE = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [
            {"type": "command", "command": "~/bin/check-bash.sh", "timeout": 10}]}],
        "PostToolUse": [{"matcher": "Edit|Write", "hooks": [
            {"type": "command", "command": "prettier --write"}]}],
    },
    "statusLine": {"type": "command", "command": "~/bin/status"},
}
USER_GEMINI = {
    "theme": "GitHub",
    "hooks": {"BeforeTool": [{"matcher": "run_shell_command", "hooks": [
        {"type": "command", "command": "./audit.sh", "name": "audit", "timeout": 3000}]}]},
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MAIA_DATA_DIR", raising=False)
    return home


def _write(path: Path, doc: dict, indent: int = 4) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=indent) + "\n")
    return path.read_bytes()


def _commands(doc: dict, event: str) -> list[str]:
    return [h["command"] for g in doc.get("hooks", {}).get(event, []) for h in g["hooks"]]


def test_install_twice_changes_nothing_the_second_time(home, tmp_path, capsys) -> None:
    """SPEC-004 §13.1, §13.2, §13.4: the entries of §12 are added next to the user's own; the
    second run leaves every file byte for byte (settings, record file), says so, and keeps
    the original as .maia-bak; commands are the absolute maia-hook with --data-dir."""
    data = tmp_path / "data"
    settings = home / ".claude" / "settings.json"
    original = _write(settings, USER_CLAUDE)
    assert cli(data, "hooks", "install", "all") == 0
    first_out = capsys.readouterr().out
    assert "added" in first_out and "16 hook(s) added." in first_out
    files = {p: p.read_bytes() for p in (settings, home / ".codex" / "hooks.json",
                                         home / ".gemini" / "settings.json", data / RECORD_FILE)}
    doc = json.loads(files[settings])
    assert list(doc) == ["model", "permissions", "hooks", "statusLine"]  # order kept
    assert list(doc["hooks"]) == ["PreToolUse", "PostToolUse", "SessionStart",
                                  "UserPromptSubmit", "Stop", "SessionEnd"]
    pre = _commands(doc, "PreToolUse")
    assert pre[0] == "~/bin/check-bash.sh" and pre[1].endswith("claude PreToolUse")
    maia_hook = pre[1].split()[0]
    assert os.path.isabs(maia_hook) and os.path.basename(maia_hook) == "maia-hook"
    assert f"--data-dir {data.resolve()}" in pre[1]
    groups = {g.get("matcher"): g for g in doc["hooks"]["PreToolUse"]}
    assert groups["Edit|Write|MultiEdit|NotebookEdit"]["hooks"][0]["timeout"] == 5
    assert _commands(doc, "PostToolUse")[0] == "prettier --write"
    assert settings.read_text().startswith('{\n    "model"')  # the user's indent kept
    assert (home / ".claude" / "settings.json.maia-bak").read_bytes() == original
    codex = json.loads(files[home / ".codex" / "hooks.json"])
    assert {g.get("matcher") for g in codex["hooks"]["PreToolUse"]} == {"apply_patch"}
    assert "SessionEnd" not in codex["hooks"]
    gemini = json.loads(files[home / ".gemini" / "settings.json"])
    assert gemini["hooks"]["BeforeTool"][0]["matcher"] == "write_file|replace"
    assert gemini["hooks"]["AfterTool"][0]["hooks"][0]["timeout"] == 5000
    assert cli(data, "hooks", "install", "all") == 0
    second = capsys.readouterr().out
    assert "Nothing changed" in second and "added" not in second.replace("hook(s) added", "")
    assert {p: p.read_bytes() for p in files} == files


def test_uninstall_removes_only_what_install_added(home, tmp_path, capsys) -> None:
    """SPEC-004 §13.3: the user's own entries, keys and order survive; groups and event lists
    install created are removed once empty; an entry edited since install is reported and
    left in place; a file install created is removed when nothing else is in it."""
    data = tmp_path / "data"
    claude = home / ".claude" / "settings.json"
    gemini = home / ".gemini" / "settings.json"
    _write(claude, USER_CLAUDE, indent=2)
    _write(gemini, USER_GEMINI, indent=2)
    for name in ("claude", "codex", "gemini"):
        assert cli(data, "hooks", "install", name) == 0
    doc = json.loads(gemini.read_text())
    entry = doc["hooks"]["AfterTool"][0]["hooks"][0]
    entry["timeout"] = 9000  # the user tuned this one
    doc["hooks"]["AfterTool"][0]["hooks"].append({"type": "command", "command": "./mine.sh"})
    gemini.write_text(json.dumps(doc, indent=2) + "\n")
    capsys.readouterr()
    assert cli(data, "hooks", "uninstall") == 0
    out = capsys.readouterr().out
    assert "edited" in out and "left in place" in out
    assert json.loads(claude.read_text()) == USER_CLAUDE
    assert not (home / ".codex" / "hooks.json").exists()  # install created it; now empty
    after = json.loads(gemini.read_text())
    assert after["theme"] == "GitHub" and after["hooks"]["BeforeTool"] == \
        USER_GEMINI["hooks"]["BeforeTool"]
    assert [h.get("timeout") for h in after["hooks"]["AfterTool"][0]["hooks"]] == [9000, None]
    assert set(after["hooks"]) == {"BeforeTool", "AfterTool"}
    assert cli(data, "hooks", "uninstall") == 0
    assert "No maia-node hooks to remove" in capsys.readouterr().out


def test_project_scope_and_refusals(home, tmp_path, capsys) -> None:
    """SPEC-004 §13.1, §13.2, §13.4: --project writes <repo>/.claude/settings.json and not the
    user's; a settings file that is not valid JSON is refused and left untouched."""
    data = tmp_path / "data"
    project = tmp_path / "proj"
    project.mkdir()
    assert cli(data, "hooks", "install", "claude", "--project", str(project)) == 0
    assert (project / ".claude" / "settings.json").exists()
    assert not (home / ".claude").exists()
    broken = home / ".gemini" / "settings.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"theme": "x",,}')
    capsys.readouterr()
    assert cli(data, "hooks", "install", "gemini") == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert broken.read_text() == '{"theme": "x",,}'
    assert not broken.with_name("settings.json.maia-bak").exists()
    assert cli(data, "hooks", "install", "claude", "--project", str(tmp_path / "nope")) == 1


def test_a_settings_file_that_is_a_symlink_is_refused(home, tmp_path, capsys) -> None:
    """SPEC-004 §13.4: a repository's .claude/settings.json (or its .gemini directory) that is
    a symbolic link is refused by name: its target is neither copied into the repository as
    .maia-bak nor written."""
    data = tmp_path / "data"
    secret = home / "secret.json"
    secret.write_text('{"token": "s3cret"}\n')
    project = tmp_path / "proj"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "settings.json").symlink_to(secret)
    (project / ".gemini").symlink_to(home)
    (home / "settings.json").write_text("{}\n")
    for agent, link in (("claude", project / ".claude" / "settings.json"),
                        ("gemini", project / ".gemini")):
        capsys.readouterr()
        assert cli(data, "hooks", "install", agent, "--project", str(project)) == 1
        err = capsys.readouterr().err
        assert f"{link} is a symbolic link" in err, err
    assert not list(project.rglob("*.maia-bak")) and not list(home.rglob("*.maia-bak"))
    assert secret.read_text() == '{"token": "s3cret"}\n'
    assert (home / "settings.json").read_text() == "{}\n"


def test_a_users_own_settings_linked_from_dotfiles_are_written_through(home, tmp_path,
                                                                      capsys) -> None:
    """SPEC-004 §13.4: the refusal of links is for a repository's files. The user's own
    ~/.claude/settings.json linked from a dotfiles checkout is the user's choice: install
    writes the file it points to, and the link stays a link."""
    data = tmp_path / "data"
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "claude-settings.json"
    real.write_text('{"theme": "dark"}\n')
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    link = home / ".claude" / "settings.json"
    link.symlink_to(real)
    assert cli(data, "hooks", "install", "claude") == 0, capsys.readouterr().err
    assert link.is_symlink() and link.resolve() == real
    written = json.loads(real.read_text())
    assert written["theme"] == "dark" and "hooks" in written
