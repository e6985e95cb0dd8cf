"""Bundled plugins, importable as ``gofannon_plugins.*`` and registered through entry points like any other."""
