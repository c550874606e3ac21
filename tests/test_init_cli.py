"""Device identity and the CLI's manners: keys are never overwritten, mistakes get one sentence."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

from crdt.keys import DeviceKey, normalize_device_id


def maia(data_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def test_init_creates_key_0600_and_checkable_device_id(tmp_path):
    """SPEC-001 §keys: the key file is mode 0600 and the device id carries check characters."""
    res = maia(tmp_path, "init", "--new-mesh", "--name", "laptop")
    assert res.returncode == 0, res.stderr
    key_file = tmp_path / "keys" / "device.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = DeviceKey.load(key_file)
    assert key.device_id in res.stdout
    assert normalize_device_id(key.device_id.lower()) == key.device_id
    # The secret never appears in what the command printed.
    seed = key_file.read_text().splitlines()[1]
    assert seed not in res.stdout + res.stderr


def test_init_twice_never_touches_the_key(tmp_path):
    """SPEC-001 §keys: rerunning init leaves the key as it was and exits non-zero."""
    assert maia(tmp_path, "init", "--new-mesh").returncode == 0
    key_file = tmp_path / "keys" / "device.key"
    before = (hashlib.sha256(key_file.read_bytes()).hexdigest(), key_file.stat().st_mtime_ns)
    for args in (("init",), ("init", "--new-mesh")):
        res = maia(tmp_path, *args)
        assert res.returncode != 0
        assert "already exists" in res.stderr and "untouched" in res.stderr
        assert "Traceback" not in res.stderr
    after = (hashlib.sha256(key_file.read_bytes()).hexdigest(), key_file.stat().st_mtime_ns)
    assert before == after
    assert maia(tmp_path, "init", "--exist-ok").returncode == 0


def test_key_with_loose_permissions_is_refused(tmp_path):
    """SPEC-001 §keys: a key readable by group or others is refused with a clear message."""
    assert maia(tmp_path, "init", "--new-mesh").returncode == 0
    key_file = tmp_path / "keys" / "device.key"
    os.chmod(key_file, 0o644)
    for args in (("status",), ("up", "--port", "0")):
        res = maia(tmp_path, *args)
        assert res.returncode == 1
        assert "permissions 644" in res.stderr and "chmod 600" in res.stderr
        assert "Traceback" not in res.stderr


def test_user_mistakes_get_one_sentence_not_a_traceback(tmp_path):
    """A user mistake: one line on stderr starting with 'maia:', non-zero exit."""
    cases = [
        ("status",),                                   # not initialised
        ("memory", "show", "note-202611-AAAAAAAAAA"),  # not initialised
    ]
    for args in cases:
        res = maia(tmp_path / "empty", *args)
        assert res.returncode == 1, args
        assert res.stderr.startswith("maia: ") and res.stderr.count("\n") == 1, res.stderr
    assert maia(tmp_path, "init", "--new-mesh").returncode == 0
    for args in [("memory", "show", "nope"), ("profile", "set", "colour=red"),
                 ("peer", "add", "no-port-here"), ("memory", "edit", "note-202611-AAAAAAAAAA",
                                                    "--text", "x")]:
        res = maia(tmp_path, *args)
        assert res.returncode == 1, (args, res.stderr)
        assert res.stderr.startswith("maia: ") and "Traceback" not in res.stderr, res.stderr


def test_help_explains_every_command(tmp_path):
    res = maia(tmp_path, "--help")
    for command in ("init", "up", "status", "profile", "memory", "peer", "peers", "device",
                    "join"):
        assert command in res.stdout
    res = maia(tmp_path, "memory", "--help")
    for sub in ("add", "list", "search", "show", "edit", "history", "import"):
        assert sub in res.stdout


def test_data_dir_from_environment(tmp_path):
    """SPEC-001 §layout: MAIA_DATA_DIR is used when --data-dir is absent."""
    target = tmp_path / "from-env"
    res = subprocess.run([sys.executable, "-m", "node.cli", "init"], capture_output=True,
                         text=True, env={**os.environ, "MAIA_DATA_DIR": str(target)})
    assert res.returncode == 0, res.stderr
    assert (target / "keys" / "device.key").exists()
