"""The Jinja2 environment the markdown reports are rendered with (``templates/``).

The robustness report and the model cards keep their text in templates beside this module;
Python computes the values (numbers formatted, a sentence's variant chosen by the data) and
hands them over as a context. The templates ship as package data (pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"

_ENVIRONMENT = jinja2.Environment(
    # Relative to this module, so an installed package (not only the checkout) finds them.
    loader=jinja2.FileSystemLoader(TEMPLATES),
    # A value the context forgot fails the render rather than printing as an empty string.
    undefined=jinja2.StrictUndefined,
    # Markdown, not HTML: escaping would turn a flag's "<=" or a class name's "&" into entities
    # that the registry UI and the files would show literally.
    autoescape=False,
    # Block tags on their own lines leave no blank lines or indentation behind, and a file's
    # final newline is the document's: the rendered text is exactly the text written.
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(template: str, **context: Any) -> str:
    """``templates/<template>`` rendered with ``context`` (every name it uses must be there)."""
    return _ENVIRONMENT.get_template(template).render(**context)


def macro(template: str, name: str) -> Any:
    """The macro ``name`` of ``templates/<template>``, callable from Python (a text shared by
    two documents, e.g. the guarantee)."""
    return getattr(_ENVIRONMENT.get_template(template).module, name)
