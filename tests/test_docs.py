"""The docs stay true: every setting is in docs/configuration.md, every hook in docs/plugins.md."""

from __future__ import annotations

from pathlib import Path

from gofannon.settings import settings_table

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_doc_lists_every_setting_as_the_code_defines_it() -> None:
    text = (DOCS / "configuration.md").read_text()
    start = text.index("<!-- settings-table:start -->\n") + len("<!-- settings-table:start -->\n")
    end = text.index("<!-- settings-table:end -->")
    assert text[start:end] == settings_table(), "regenerate with: python -m gofannon.settings"


def test_architecture_doc_names_only_files_that_exist() -> None:
    """The layout block of docs/architecture.md stays true to the tree."""
    text = (DOCS / "architecture.md").read_text()
    block = text.split("```", 2)[1]
    repo = DOCS.parent
    parent = ""
    checked = 0
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent > 2:  # a description's continuation line
            continue
        names = line.strip().split("  ")[0]
        for name in names.split(", "):
            name = name.strip()
            if not name or " " in name:
                continue
            path = (parent + name) if indent else name
            if indent == 0 and name.endswith("/"):
                parent = name
            elif indent == 0:
                parent = ""
            if indent and not parent:
                continue
            assert (repo / path.rstrip("/")).exists(), f"docs/architecture.md names {path}, which does not exist"
            checked += 1
    assert checked > 20


def test_plugins_doc_mentions_every_plugin_setting() -> None:
    text = (DOCS / "plugins.md").read_text()
    for name in ("GOFANNON_STRICT_PLUGINS", "GOFANNON_LOAD_PLUGINS", "GOFANNON_DISABLE_PLUGINS", "GOFANNON_TRACE_PLUGINS"):
        assert name in text
