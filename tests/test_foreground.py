"""Background work yields to requests being answered (SPEC-003 §7.5a, issue 14): a job that
takes its turns on the event loop back to back made every request wait behind each of its
steps. Real aiohttp server on loopback; the job is a loop of steps like a consolidation run's.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.api import IN_FLIGHT_KEY, RouteTable, build_app
from node.api.foreground import MAX_YIELD, Foreground
from tests.test_api_errors import AUTH, TOKEN, DictServices

routes = RouteTable("foreground-test")
release = asyncio.Event()


@routes.get("/v1/test/held")
async def held(request: web.Request) -> web.Response:
    await release.wait()
    return web.json_response({"ok": True})


@routes.get("/v1/test/stream", streaming=True)
async def stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await release.wait()
    await resp.write_eof()
    return resp


async def test_a_job_waits_while_a_request_is_answered_and_never_longer() -> None:
    release.clear()
    app = build_app(DictServices(), token=TOKEN, extra_tables=[routes])
    foreground: Foreground = app[IN_FLIGHT_KEY]
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        assert await foreground.yield_to_requests() == 0.0  # nobody waiting: no pause

        # a streaming route is not counted (SPEC-003 §7.5): a long-lived stream must not
        # slow every job for as long as it is open
        streaming = asyncio.create_task(client.get("/v1/test/stream", headers=AUTH))
        await asyncio.sleep(0.05)
        assert foreground.in_flight == 0
        assert await foreground.yield_to_requests() == 0.0

        request = asyncio.create_task(client.get("/v1/test/held", headers=AUTH))
        while foreground.in_flight == 0:
            await asyncio.sleep(0.001)
        asyncio.get_running_loop().call_later(0.01, release.set)
        t0 = time.perf_counter()
        waited = await foreground.yield_to_requests(most=5.0)
        # it waited for the request to be answered: not less, and it stopped once it was
        # (counted in its own polls, so a busy machine cannot make this flaky)
        assert time.perf_counter() - t0 >= 0.008
        assert 0 < waited < 5.0, waited
        resp = await request
        assert resp.status == 200
        (await streaming).close()
        resp.close()

        # a request that never ends holds a job at most MAX_YIELD per step
        release.clear()
        request = asyncio.create_task(client.get("/v1/test/held", headers=AUTH))
        while foreground.in_flight == 0:
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        waited = await foreground.yield_to_requests()
        assert time.perf_counter() - t0 >= MAX_YIELD * 0.9
        assert waited >= MAX_YIELD, waited
        # the job's own request is not one to yield to
        assert await foreground.yield_to_requests(own=1) == 0.0
        release.set()
        (await request).close()


async def test_a_node_hands_its_local_api_count_to_the_consolidation_job(
    tmp_path, monkeypatch,
) -> None:
    """SPEC-003 §7.5a: the count a job yields to is the local API's. The features configure
    the local API's app and then the peer listener's; when the job took the app's count in
    ``configure_app``, the last one won, and a run yielded to the peer listener's requests
    (none) instead of the person's."""
    from node.api.middleware import IN_FLIGHT_KEY
    from node.config import NodeConfig
    from node.node import Node
    from tests.nodes import cli

    monkeypatch.setenv("MAIA_DISCOVERY", "0")
    assert cli(tmp_path / "n", "init", "--new-mesh", "--name", "n") == 0
    cfg = NodeConfig.load(tmp_path / "n" / "config.toml")
    cfg.peer_listen, cfg.peer_port = "127.0.0.1", 0
    node = Node(tmp_path / "n", cfg)
    await node.start(host="127.0.0.1", port=0)
    try:
        job = next(f for f in node.features if f.name == "consolidation").job
        local = node._runner.app[IN_FLIGHT_KEY]
        peer = node._peer_runner.app[IN_FLIGHT_KEY]
        assert local is not peer
        assert job.foreground is local is node.foreground
    finally:
        await node.stop()
