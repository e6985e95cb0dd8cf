"""Bundled tools plugins."""
