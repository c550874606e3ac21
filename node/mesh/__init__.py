"""The peer mesh (SPEC-005 §8-§12): connections to the other devices, their discovery on the
LAN, pairing new devices, and the static peer list. ``peers`` is the connection manager,
``discovery`` the mDNS feature, ``peerlist`` the rules of the static list, ``pairing/`` the
pairing protocol, ``routes``/``cli``/``sync_progress`` the thin callers."""
