"""Pairing (SPEC-005 §12): a new device joins when both sides prove the code and both users
compare a short authentication string. ``member`` is the side that admits (and the shared
proofs), ``client`` the new device's side, ``routes``/``cli`` their thin callers."""
