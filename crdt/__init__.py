"""Signed CRDT documents, their LMDB store and their sync protocol.

This package knows nothing of HTTP, mDNS or sockets: ``node/`` drives it through the names
exported here.
"""
