"""Typed application keys."""

from __future__ import annotations

from aiohttp import web

from gofannon.kernel import Kernel
from gofannon.settings import Settings

KERNEL = web.AppKey("kernel", Kernel)
SETTINGS = web.AppKey("settings", Settings)
