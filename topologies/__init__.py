"""Mininet lab topologies (usable with `mn --custom` and from Python)."""
