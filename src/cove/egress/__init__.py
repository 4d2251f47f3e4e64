"""Per-sandbox egress: the only way out of a sandbox's lo-only network namespace."""
