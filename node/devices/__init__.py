"""Devices of the mesh (SPEC-005 §5): list members and revoked devices, enrol, revoke.

The rules (who may enrol whom, what a revocation keeps) live in ``crdt.identity``; ``routes``
and ``cli`` are thin callers of it.
"""
