"""Backups of the irreplaceable layers (Identity and Memory): encrypted, incremental,
content-addressed, verified by restoring them (SPEC-002).

Substrate is reinstalled, Runtime is rebuilt, so neither is backed up. The package is split
by concern: ``format`` (manifests, packs, names), ``crypto`` (keys and sealing),
``repository`` (the directory on a drive or NAS), ``create``, ``restore``, ``verify``,
``retention``, ``settings`` (the ``[backup]`` table), ``feature`` (scheduled backups while
``maia up`` runs) and ``cli`` (``maia backup ...``).
"""
