"""Shared fixtures: real node processes, started and always stopped."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backup_util import PASSPHRASE
from tests.nodes import NodeProc, make_mesh


@pytest.fixture
def mesh_factory(tmp_path: Path) -> Iterator:
    started: list[NodeProc] = []

    def factory(*names: str, start: bool = True) -> list[NodeProc]:
        nodes = make_mesh(tmp_path, list(names))
        if start:
            for n in nodes:
                n.start()
        started.extend(nodes)
        return nodes

    yield factory
    for n in started:
        n.stop()


@pytest.fixture
def passphrase_and_scratch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The backup passphrase in the environment, and temporary files (where a backup verify
    restores) under the test's own directory."""
    monkeypatch.setenv("MAIA_BACKUP_PASSPHRASE", PASSPHRASE)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-randomly's: runs after it
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Any:
    """pytest-randomly shuffles modules and the tests inside them. A module marked ``in_order``
    (its tests share one mesh and build on each other, e.g. a node killed by an earlier test)
    keeps its place in the shuffled order, but its tests run in the order of the file."""
    original = {id(item): n for n, item in enumerate(items)}
    result = yield
    slots: dict[Any, list[int]] = {}
    for pos, item in enumerate(items):
        if item.get_closest_marker("in_order") is not None:
            slots.setdefault(item.module, []).append(pos)
    for positions in slots.values():
        ordered = sorted((items[p] for p in positions), key=lambda it: original[id(it)])
        for pos, item in zip(positions, ordered, strict=True):
            items[pos] = item
    return result
