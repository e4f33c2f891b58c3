"""Measuring sticks for `make bench` (docs/performance.md): not product services."""
