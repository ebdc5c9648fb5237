"""Tests: unit (fake switch) and integration (Mininet, real traffic)."""
