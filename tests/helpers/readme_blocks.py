"""The README's code blocks that a test runs, so that what the README shows is what works.

A block is marked by the HTML comment ``<!-- readme-test: NAME -->`` on the line before its
fence; the comment does not show on GitHub or in the docs.
"""

from __future__ import annotations

import re

from tests.helpers.paths import PROJECT_ROOT


def readme_block(name: str) -> str:
    """The code of the fenced block marked ``name`` in README.md."""
    marked = re.compile(
        rf"^<!-- readme-test: {re.escape(name)} -->\n```\w*\n(.*?)^```$", re.DOTALL | re.MULTILINE
    )
    found = marked.findall((PROJECT_ROOT / "README.md").read_text())
    assert len(found) == 1, f"README.md has {len(found)} blocks marked {name!r}, not one"
    return found[0]


def substituted(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each key replaced by its value, each key required to occur: a README that
    changed its wording fails here, by name, rather than running something else."""
    for old, new in replacements.items():
        assert old in code, f"the README block no longer holds {old!r}:\n{code}"
        code = code.replace(old, new)
    return code
