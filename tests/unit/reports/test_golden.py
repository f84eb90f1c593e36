"""The robustness report and the model cards render byte for byte as the goldens.

``golden/*.md`` were rendered by the code before the reports moved into Jinja2 templates (the
lists of lines in ``report.py`` and ``model_card.py``, commit c1aae09), from the inputs in
``golden_cases.py``: a default run's (``golden/default_run.json``) and one case per branch of the
text. A difference here is a change to what people read: if it is meant, regenerate the goldens
(``golden_cases.py`` says how) and say in the change what differs and why.
"""

from __future__ import annotations

import tomllib
from pathlib import PurePath

import jinja2
import pytest

from iocane.reports.templating import TEMPLATES, render
from tests.helpers.paths import PROJECT_ROOT
from tests.unit.reports.golden_cases import GOLDEN, cases, render_case

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_renders_byte_for_byte_as_its_golden(name: str) -> None:
    golden = (GOLDEN / f"{name}.md").read_bytes()
    rendered = render_case(CASES[name]).encode()
    assert rendered == golden, f"{name}.md differs from golden/{name}.md"


def test_every_golden_has_its_case_and_the_cases_cover_every_document() -> None:
    assert {path.stem for path in GOLDEN.glob("*.md")} - {"README"} == set(CASES)
    kinds = {case["kind"] for case in CASES.values()}
    assert kinds == {"report", "model_card", "evaluation_card"}


def test_a_value_the_context_forgot_fails_the_render() -> None:
    with pytest.raises(jinja2.UndefinedError, match="preset"):
        render(
            "card/use_and_threat.md.j2",
            dataset="digits",
            image_size=8,
            num_classes=10,
            class_names=[],
            norm="Linf",
            eps="0.1",
            n_samples=360,
        )


def test_markdown_is_not_escaped() -> None:
    text = render("card/trust.md.j2", flags=["a < b & c"], cw_flags=[])
    assert "- a < b & c\n" in text


def test_every_template_ships_as_package_data() -> None:
    """A non-editable install carries only the files pyproject.toml's package-data names (glob
    patterns relative to the package, ``*`` within one folder)."""
    setuptools = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = [PurePath(glob) for glob in setuptools["package-data"]["iocane.reports"]]
    templates = [path.relative_to(TEMPLATES.parent) for path in TEMPLATES.rglob("*.j2")]
    assert templates
    for template in templates:
        assert any(
            template.match(str(glob)) and len(template.parts) == len(glob.parts)
            for glob in patterns
        ), f"{template} is not in [tool.setuptools.package-data]"
