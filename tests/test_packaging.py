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


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["gofannon"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines if line.strip())  # type: ignore[misc]


def test_every_bundled_plugin_is_an_entry_point_like_a_third_party_one() -> None:
    declared = set(_entry_points().values())
    for init in (REPO / "plugins").rglob("__init__.py"):
        if "@hookimpl" in init.read_text():
            module = ".".join(["gofannon_plugins", *init.parent.relative_to(REPO / "plugins").parts])
            assert module in declared, f"{module} implements hooks but has no entry point in setup.cfg"


def test_the_console_script_and_module_entry_work() -> None:
    import subprocess
    import sys

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "gofannon = gofannon.cli:main" in cfg["options.entry_points"]["console_scripts"]
    out = subprocess.run([sys.executable, "-m", "gofannon", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("serve", "worker", "plugins"):
        assert command in out.stdout


def test_the_example_plugin_is_a_separate_installable_package() -> None:
    example = REPO / "examples" / "gofannon-hello-plugin"
    assert "build-backend" in (example / "pyproject.toml").read_text()
    cfg = configparser.ConfigParser()
    cfg.read(example / "setup.cfg")
    assert cfg["metadata"]["name"] == "gofannon-hello-plugin"
    assert cfg["options.entry_points"]["gofannon"].strip() == "hello = gofannon_hello"
