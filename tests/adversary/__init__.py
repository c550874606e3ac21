"""Hostile-member harnesses: property-based, over the trust core (SPEC-005 §5)."""
