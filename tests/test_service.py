"""Service mode (issue: headless home server): a valid, idempotent systemd unit; logs as JSON."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys

import pytest

from tests.nodes import cli


def _maia(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("system", [False, True])
def test_service_install_writes_a_valid_unit_idempotently(tmp_path, system):
    data = tmp_path / "data"
    assert cli(data, "init", "--new-mesh") == 0
    units = tmp_path / "units"
    extra = ["--system", "--user", "root"] if system else []
    first = _maia(data, "service", "install", "--unit-dir", str(units), *extra)
    assert first.returncode == 0, first.stderr
    assert "Created" in first.stdout and "enable --now maia-node" in first.stdout
    assert "journalctl" in first.stdout
    unit = units / "maia-node.service"
    text = unit.read_text()
    parsed = configparser.ConfigParser(strict=True, interpolation=None)
    parsed.read_string(text)
    assert parsed["Service"]["Restart"] == "on-failure"
    assert f"--data-dir {data.resolve()}" in parsed["Service"]["ExecStart"]
    assert parsed["Service"]["ExecStart"].endswith(" up")
    assert parsed["Install"]["WantedBy"] == ("multi-user.target" if system else "default.target")
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    second = _maia(data, "service", "install", "--unit-dir", str(units), *extra)
    assert "Unchanged" in second.stdout and unit.read_text() == text


def test_uninstall_removes_only_what_it_wrote(tmp_path):
    data, units = tmp_path / "data", tmp_path / "units"
    assert cli(data, "init", "--new-mesh") == 0
    units.mkdir()
    foreign = units / "maia-node.service"
    foreign.write_text("[Unit]\nDescription=somebody else's\n")
    res = _maia(data, "service", "install", "--unit-dir", str(units))
    assert res.returncode == 1 and "not written by maia" in res.stderr
    res = _maia(data, "service", "uninstall", "--unit-dir", str(units))
    assert res.returncode == 1 and foreign.exists()
    foreign.unlink()
    assert _maia(data, "service", "install", "--unit-dir", str(units)).returncode == 0
    res = _maia(data, "service", "uninstall", "--unit-dir", str(units))
    assert res.returncode == 0 and not foreign.exists()


def test_json_logs_are_one_object_per_line(tmp_path):
    data = tmp_path / "data"
    assert cli(data, "init", "--new-mesh") == 0
    res = _maia(data, "--log-level", "INFO", "--log-format", "json", "status")
    assert res.returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data), "--log-format", "json",
         "up", "--port", "0", "--peer-port", "0", "--peer-listen", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"MAIA_DISCOVERY": "0", "PATH": "/usr/bin:/bin"},
    )
    try:
        line = proc.stderr.readline()
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)
    finally:
        proc.terminate()
        proc.wait(15)
