"""SPEC-004 §15.4: `maia hooks install` registers `maia mcp` in each CLI's own MCP configuration;
install twice = once; uninstall removes exactly that entry and keeps the user's own servers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.nodes import cli

USER_CLAUDE_JSON = {
    "numStartups": 42,
    "projects": {"/src/app": {"mcpServers": {"local-db": {"command": "db-mcp"}}}},
    "mcpServers": {"github": {"type": "stdio", "command": "npx",
                              "args": ["-y", "@modelcontextprotocol/server-github"], "env": {}}},
}
USER_CODEX_TOML = """\
model = "gpt-5-codex"
approval_policy = "on-request"

[mcp_servers.docs]
command = "docs-mcp"
args = ["--port", "0"]

[profiles.fast]
model = "gpt-5-mini"
"""
USER_GEMINI = {"theme": "GitHub", "mcpServers": {"bookmarks": {"command": "uv",
                                                               "args": ["run", "b.py"]}}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MAIA_DATA_DIR", raising=False)
    return home


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and not p.name.endswith(".maia-bak")}


def test_install_registers_the_server_once_and_uninstall_restores_every_byte(
        home: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    claude_json = home / ".claude.json"
    claude_json.write_text(json.dumps(USER_CLAUDE_JSON, indent=2) + "\n")
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text(USER_CODEX_TOML)
    gemini = home / ".gemini" / "settings.json"
    gemini.parent.mkdir()
    gemini.write_text(json.dumps(USER_GEMINI, indent=2) + "\n")
    before = _files(home)

    assert cli(data, "hooks", "install", "all") == 0
    assert "3 MCP server entries registered" in capsys.readouterr().out
    servers = json.loads(claude_json.read_text())["mcpServers"]
    assert set(servers) == {"github", "maia"} and servers["maia"]["type"] == "stdio"
    assert servers["maia"]["args"][-3:] == ["mcp", "--agent", "claude"]
    assert "--data-dir" in servers["maia"]["args"]  # not the default data dir
    assert json.loads(claude_json.read_text())["numStartups"] == 42
    toml = tomllib.loads(codex.read_text())
    assert set(toml["mcp_servers"]) == {"docs", "maia"}
    assert toml["mcp_servers"]["maia"]["args"][-3:] == ["mcp", "--agent", "codex"]
    assert toml["profiles"]["fast"]["model"] == "gpt-5-mini"
    assert codex.read_text().startswith(USER_CODEX_TOML)  # the user's bytes, untouched
    gem = json.loads(gemini.read_text())["mcpServers"]
    assert set(gem) == {"bookmarks", "maia"}

    once = _files(home)
    assert cli(data, "hooks", "install", "all") == 0
    assert "registered" not in capsys.readouterr().out
    assert _files(home) == once  # install twice = once

    assert cli(data, "hooks", "uninstall") == 0
    assert "3 MCP server entries removed" in capsys.readouterr().out
    assert _files(home) == before  # exactly what install added is gone, nothing else


def test_project_scope_and_a_user_edit_is_left_in_place(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    project = tmp_path / "repo"
    project.mkdir()
    assert cli(data, "hooks", "install", "claude", "--project", str(project)) == 0
    mcp_json = project / ".mcp.json"
    doc = json.loads(mcp_json.read_text())
    assert list(doc["mcpServers"]) == ["maia"]
    doc["mcpServers"]["maia"]["env"] = {"MAIA_MCP_LOG": "DEBUG"}  # the user changed it
    mcp_json.write_text(json.dumps(doc, indent=2) + "\n")
    assert cli(data, "hooks", "uninstall", "claude") == 0
    assert json.loads(mcp_json.read_text())["mcpServers"]["maia"]["env"] == {
        "MAIA_MCP_LOG": "DEBUG"}


def test_a_server_named_maia_that_we_did_not_write_is_refused(home: Path, tmp_path: Path,
                                                              capsys) -> None:
    data = tmp_path / "data"
    gemini = home / ".gemini" / "settings.json"
    gemini.parent.mkdir()
    theirs = {"mcpServers": {"maia": {"command": "something-else"}}}
    gemini.write_text(json.dumps(theirs, indent=2) + "\n")
    assert cli(data, "hooks", "install", "gemini") != 0
    assert "did not write" in capsys.readouterr().err
    assert json.loads(gemini.read_text())["mcpServers"] == theirs["mcpServers"]
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text("mcp_servers = { other = { command = \"x\" } }\n")
    assert cli(data, "hooks", "install", "codex") != 0
    assert codex.read_text() == "mcp_servers = { other = { command = \"x\" } }\n"


def test_a_config_file_that_is_a_symlink_is_refused(home: Path, tmp_path: Path, capsys) -> None:
    """SPEC-004 §13.4, §15.4: a repository whose .mcp.json or .codex/config.toml is a symbolic
    link is refused by name; the link's target is not copied in as .maia-bak nor written."""
    data = tmp_path / "data"
    secret = home / "secret.txt"
    secret.write_text("token = \"s3cret\"\n")
    project = tmp_path / "proj"
    (project / ".codex").mkdir(parents=True)
    secret_json = home / "secret.json"
    secret_json.write_text('{"token": "s3cret"}\n')
    (project / ".mcp.json").symlink_to(secret_json)
    (project / ".codex" / "config.toml").symlink_to(secret)
    for agent, link in (("claude", project / ".mcp.json"),
                        ("codex", project / ".codex" / "config.toml")):
        capsys.readouterr()
        assert cli(data, "hooks", "install", agent, "--project", str(project)) == 1
        err = capsys.readouterr().err
        assert f"{link} is a symbolic link" in err, err
    assert not list(project.rglob("*.maia-bak")) and not list(home.rglob("*.maia-bak"))
    assert secret.read_text() == "token = \"s3cret\"\n"
    assert secret_json.read_text() == '{"token": "s3cret"}\n'
