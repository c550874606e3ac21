"""The OpenAPI document (SPEC-003 §3.8) and a schemathesis walk of a real node with it.

The document comes from the route tables, so a client generator or an API tester sees exactly
the routes the node serves; schemathesis then fuzzes every non-streaming operation of a real
``maia up`` process, with and without the token, and every answer must be below 500 and every
error a problem (SPEC-003 §9.1, §9.4, §9.6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from node.api.openapi import render
from node.apidoc import DEFAULT_OUTPUT, node_document
from tests.nodes import NodeProc, make_mesh

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    root = tmp_path_factory.mktemp("openapi")
    (one,) = make_mesh(root, ["fuzzed"])
    config = one.data_dir / "config.toml"
    # The walk measures answers, not the rate limit: give it room for a burst.
    config.write_text(config.read_text()
                      + "\n[api]\nrate_per_second = 10000\nrate_burst = 10000\n")
    one.start()
    try:
        yield one
    finally:
        one.stop()


def fetch_document(node: NodeProc, token: bool) -> requests.Response:
    headers = {"Authorization": f"Bearer {node.token}"} if token else {}
    return requests.get(f"{node.base}/v1/openapi.json", headers=headers, timeout=10)


def test_the_document_is_served_to_the_owner_and_matches_the_route_tables(
    node: NodeProc,
) -> None:
    """SPEC-003 003.3.8: `GET /v1/openapi.json` is private, answers an OpenAPI 3.1 document of
    the routes the listener serves, and `docs/openapi.json` is the whole node's document as
    `python -m node.api.openapi` writes it today."""
    anonymous = fetch_document(node, token=False)
    assert anonymous.status_code == 401
    assert anonymous.headers["Content-Type"].startswith(PROBLEM)
    served = fetch_document(node, token=True)
    assert served.status_code == 200
    document = served.json()
    assert document["openapi"].startswith("3.1")
    status = document["paths"]["/v1/status"]["get"]
    assert status["security"] == [{"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    pattern = document["paths"]["/v1/sessions/{id}"]["get"]["parameters"][0]
    assert pattern["in"] == "path" and pattern["schema"]["pattern"].startswith("^")
    assert document["paths"]["/v1/live"]["get"]["x-maia-streaming"] is True
    expected = node_document()
    assert set(document["paths"]) <= set(expected["paths"])
    assert set(expected["paths"]) - set(document["paths"]) <= {"/v1/peer", "/v1/pair"}
    on_disk = (ROOT / DEFAULT_OUTPUT).read_text()
    assert on_disk == render(expected), "docs/openapi.json is stale: run python -m node.api.openapi"


def _walk(node: NodeProc, token: bool, max_examples: int) -> tuple[int, list[str], int]:
    """Fuzz every non-streaming operation; returns (requests, failures, 5xx count)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(fetch_document(node, token=True).json())
    headers = {"Authorization": f"Bearer {node.token}"} if token else {}
    http = requests.Session()
    tried = 0
    server_errors = 0
    failures: list[str] = []

    def check(case: Any) -> None:
        nonlocal tried, server_errors
        tried += 1
        response = case.call(base_url=node.base, session=http, headers=headers, timeout=10,
                             allow_redirects=False)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        content_type = (response.headers.get("content-type") or [""])[0]  # lower-case keys
        if response.status_code >= 500:
            server_errors += 1
            failures.append(f"{where}: {response.text[:200]}")
        elif response.status_code >= 400:
            if not content_type.startswith(PROBLEM):
                failures.append(f"{where}: not a problem: {content_type}")
            elif json.loads(response.text).get("status") != response.status_code:
                failures.append(f"{where}: problem status differs")

    run_settings = settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=True,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("x-maia-streaming"):
            continue  # SSE and WebSocket routes never end; §7.2 bounds them instead
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception as exc:  # an operation with nothing negative to generate
                if mode is GenerationMode.NEGATIVE:
                    continue
                raise AssertionError(f"{operation.label}: {exc}") from exc
            try:
                run_settings(given(case=strategy)(lambda case: check(case)))()
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise  # only an operation with no input has no invalid variant
    http.close()
    return tried, failures, server_errors


@pytest.mark.slow
@pytest.mark.parametrize("token", [True, False], ids=["with-token", "without-token"])
def test_schemathesis_finds_no_5xx_and_only_problems(
    node: NodeProc, token: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC-003 003.3.8, 003.9.1, 003.9.4, 003.9.6: schemathesis, driven by the served
    document, sends valid and invalid requests to every non-streaming operation of a real
    node; no answer is a 5xx, every error is a problem whose status matches, and the node
    answers normally afterwards with nothing logged at ERROR."""
    before = len(node.log())
    started = time.monotonic()
    tried, failures, server_errors = _walk(node, token, max_examples=10 if token else 4)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"schemathesis {'with' if token else 'without'} the token: {tried} requests, "
              f"{server_errors} 5xx, {len(failures)} failures, {elapsed:.1f} s")
    assert tried > 100
    assert not failures, "\n".join(failures[:30])
    assert server_errors == 0
    assert node.request("GET", "/health", auth=False) == {"status": "ok"}
    assert node.request("GET", "/v1/status")["device_id"]
    log = node.log()[before:]
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
