"""Devices as a node feature: the device routes and the ``maia device``/``devices``/``join``
commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from ..api.routes import RouteTable
from ..features import Commands, FeatureBase
from . import cli
from .routes import PEERS_STATE_KEY, REPO_KEY, device_routes

if TYPE_CHECKING:
    from ..node import Node


class DevicesFeature(FeatureBase):
    name = "devices"

    def __init__(self) -> None:
        self.node: Node | None = None

    def setup(self, node: Node) -> None:
        self.node = node

    def route_tables(self) -> Sequence[RouteTable]:
        return [device_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[REPO_KEY] = self.node.repo
        app[PEERS_STATE_KEY] = self.node.peers

    def register_cli(self, commands: Commands) -> None:
        cli.register(commands)


def create() -> DevicesFeature:
    return DevicesFeature()
