"""Devices as a node feature: the device routes and the ``maia device``/``devices``/``join``
commands."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..api.routes import RouteTable
from ..features import FeatureBase
from .routes import PEERS_STATE_KEY, REPO_KEY, device_routes


class DevicesFeature(FeatureBase):
    name = "devices"

    def route_tables(self) -> Sequence[RouteTable]:
        return [device_routes]

    def configure_app(self, app: web.Application) -> None:
        assert self.node is not None
        app[REPO_KEY] = self.node.repo
        app[PEERS_STATE_KEY] = self.node.peers



def create() -> DevicesFeature:
    return DevicesFeature()
