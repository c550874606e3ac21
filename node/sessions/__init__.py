"""Cross-LLM coordination (SPEC-004): agent sessions, their tags, tiered context, leases, journal.

This package's ``__init__`` imports nothing on purpose: the hook command (``node/sessions/hook.py``)
imports a few of its stdlib-only modules (``adapters``, ``localhttp``, ``clock``) and must
start fast, so importing ``node.sessions`` must not pull in aiohttp, msgpack or LMDB.
Stdlib-only modules: ``adapters/*``, ``clock``, ``localhttp``, ``gitinfo``, ``heartbeat``,
``install``, ``runwrap``. Everything else runs inside the node process.
"""
