"""Bundled storage plugins."""
