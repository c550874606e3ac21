"""Pairing as a node feature: its routes on both listeners and its ``maia pair`` commands."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ...api.routes import RouteTable
from ...features import FeatureBase
from .member import Pairing
from .routes import PAIRING_KEY, pairing_listener_routes, pairing_routes


class PairingFeature(Pairing, FeatureBase):
    def route_tables(self) -> Sequence[RouteTable]:
        return [pairing_routes]

    def peer_listener_tables(self) -> Sequence[RouteTable]:
        return [pairing_listener_routes]

    def configure_app(self, app: web.Application) -> None:
        app[PAIRING_KEY] = self



def create() -> PairingFeature:
    return PairingFeature()
