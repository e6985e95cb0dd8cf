"""Bundled providers plugins."""
