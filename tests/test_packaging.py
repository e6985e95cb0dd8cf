"""Packaging: every package directory is listed in setup.cfg, so a non-editable install is complete."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip() and not p.strip().startswith("#")}
    found = set()
    for top, name in (("gofannon", "gofannon"), ("plugins", "gofannon_plugins")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these packages to setup.cfg [options] packages"
