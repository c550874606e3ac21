"""Shared fixtures: real node processes, started and always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
