"""The plugin contract stays documented and tested (datasette's rule).

Every hook in ``gofannon/hookspecs.py`` must have a heading in docs/plugins.md that is its signature,
and some test under tests/ must implement or call it. Adding a hook without both fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gofannon import hookspecs

REPO = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if inspect.isfunction(fn) and hasattr(fn, "gofannon_spec"))


def signature_heading(name: str) -> str:
    """``register_routes(register, settings)``: what the docs heading for a hook must say."""
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def test_the_hook_list_is_not_empty() -> None:
    assert "register_providers" in HOOKS and "record_event" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_under_a_heading_that_is_its_signature(hook: str) -> None:
    docs = (REPO / "docs" / "plugins.md").read_text()
    headings = {m.group(1).strip().strip("`") for m in re.finditer(r"^#{2,4} (.+)$", docs, re.M)}
    assert signature_heading(hook) in headings, f"docs/plugins.md needs a heading: ### `{signature_heading(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook: str) -> None:
    pattern = re.compile(rf"def {hook}\(|[\"']{hook}[\"']|\.{hook}\(")
    users = [p.name for p in (REPO / "tests").glob("test_*.py")
             if p.name != Path(__file__).name and pattern.search(p.read_text())]
    assert users, f"no test implements or calls the hook {hook}"


def test_every_hook_has_a_docstring() -> None:
    for hook in HOOKS:
        assert (getattr(hookspecs, hook).__doc__ or "").strip(), hook
