"""A config.toml value of the wrong type or out of range is refused at start, naming the key
(SPEC-001 §3.6): never a traceback, never a value silently made of the wrong thing (a
`static = "host:7412"` string used to become a list of its characters)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig

BAD = [
    ('[node]\nport = "7411"\n', "node.port"),
    ("[node]\nport = true\n", "node.port"),
    ("[node]\nname = 7\n", "node.name"),
    ('[node]\nlog_level = "chatty"\n', "node.log_level"),
    ("[node]\nlisten = [1]\n", "node.listen"),
    ('[peers]\nstatic = "10.0.0.2:7412"\n', "peers.static"),
    ("[peers]\nstatic = [1, 2]\n", "peers.static"),
    ("[peers]\nadvertise = 3\n", "peers.advertise"),
    ("[peers]\nport = 70000\n", "peers.port"),
    ('node = "x"\n', "[node]"),
]


@pytest.mark.parametrize(("text", "key"), BAD)
def test_a_wrong_value_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        NodeConfig.load(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_good_values_still_load(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nname = "desk"\nport = 7500\nlog_level = "debug"\n'
                    '[peers]\nstatic = ["10.0.0.2:7412"]\nport = 7501\n')
    cfg = NodeConfig.load(path)
    assert (cfg.name, cfg.port, cfg.log_level, cfg.static_peers, cfg.peer_port) == (
        "desk", 7500, "DEBUG", ["10.0.0.2:7412"], 7501)


def test_maia_up_says_which_key_and_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text('[peers]\nstatic = "10.0.0.2:7412"\n')
    res = subprocess.run([sys.executable, "-m", "node.cli", "--data-dir", str(data), "up"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "peers.static" in res.stderr and "Traceback" not in res.stderr, res.stderr
