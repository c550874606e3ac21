"""Every pattern that checks a name, id or time the node is given accepts nothing after it.

Python's ``$`` also matches before a final newline, so ``re.match(r"^...$")`` took
``"identity\\n"`` for a document id, ``"claude\\n"`` for a peer's cortex name (which then went
into a response header, SPEC-003 003.10.4) and ``"<64 hex>\\n"`` for a certificate id. Found by
an attacker's read of the header that carried a peer's text; the patterns end with ``\\Z``.
"""

from __future__ import annotations

import re

import pytest

from crdt.docids import valid_doc_id
from crdt.roster import _CERT_ID_RE
from node.backup.format import _MANIFEST_NAME, _RECORD_NAME, HEX64
from node.consolidation.config import _DEVICE_ID
from node.consolidation.rejections import _DIGEST
from node.consolidation.skills import NAME_RE as SKILL_NAME
from node.memory.versions import VERSION_RE
from node.routing.config import ENV_NAME_RE
from node.routing.config import NAME_RE as CORTEX_NAME
from node.sessions.cli import LEASE_ID, SESSION_ID
from node.sessions.clock import _ISO
from node.sessions.entities import _HOST_OK

HEX = "ab" * 32
CASES: list[tuple[str, re.Pattern[str], str]] = [
    ("cortex name", CORTEX_NAME, "claude"),
    ("environment variable", ENV_NAME_RE, "OPENAI_API_KEY"),
    ("certificate id", _CERT_ID_RE, HEX),
    ("backup manifest", _MANIFEST_NAME, f"20261204T000000Z-{HEX}.manifest"),
    ("backup record", _RECORD_NAME, f"{HEX}.20261204T000000Z.record"),
    ("backup hash", HEX64, HEX),
    ("device id", _DEVICE_ID, "ABCDEFGHIJ"),
    ("rejection digest", _DIGEST, HEX),
    ("skill name", SKILL_NAME, "deploy"),
    ("version", VERSION_RE, "0123abcd"),
    ("session id", SESSION_ID, "a" * 26),
    ("lease id", LEASE_ID, "0" * 32),
    ("time", _ISO, "2026-12-04T18:00:00Z"),
    ("host", _HOST_OK, "example.org"),
]


@pytest.mark.parametrize(("what", "pattern", "good"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\nX-Injected: 1"])
def test_nothing_may_follow_a_checked_value(what: str, pattern: re.Pattern[str], good: str,
                                            tail: str) -> None:
    assert pattern.match(good), what
    assert not pattern.match(good + tail), what


def test_a_document_id_with_a_newline_is_no_document_id() -> None:
    assert valid_doc_id("identity") and valid_doc_id("memory/note/2026-12/3")
    for bad in ("identity\n", "memory/note/2026-12/3\n"):
        assert not valid_doc_id(bad)
