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
