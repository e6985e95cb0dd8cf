"""Gofannon kernel: a small aiohttp service that loads its vendors as pluggy plugins."""

import pluggy

__version__ = "0.1.0"

#: Marker plugins use to implement a hook: ``@gofannon.hookimpl``.
hookimpl = pluggy.HookimplMarker("gofannon")

__all__ = ["hookimpl", "__version__"]
