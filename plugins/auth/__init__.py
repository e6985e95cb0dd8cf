"""Bundled auth plugins."""
