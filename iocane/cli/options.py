"""The options of ``iocane``'s commands, declared once (typer's ``Annotated`` form)."""

from __future__ import annotations

from typing import Annotated

import typer

# The options several commands share, spelled as they always were.
Params = Annotated[str, typer.Option("--params", metavar="FILE", help="params file")]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="SECTION.KEY=VALUE",
        help="override one parameter; repeatable",
        show_default=False,
    ),
]
IfDataChanged = Annotated[
    bool,
    typer.Option(
        "--if-data-changed",
        help="only when the data fingerprint differs from the champion's (the reharden flow)",
    ),
]

# iocane evaluate: the model (one of two), an optional baseline, where the report goes.
ModelUri = Annotated[
    str | None,
    typer.Option(
        "--model-uri", metavar="URI", help="models:/NAME@ALIAS, models:/NAME/N, runs:/ID/PATH"
    ),
]
ModelFile = Annotated[
    str | None,
    typer.Option("--model-file", metavar="PATH", help="a state_dict, .pt2 or iocane file"),
]
BaselineUri = Annotated[
    str | None, typer.Option("--baseline-uri", metavar="URI", help="a baseline to compare with")
]
BaselineFile = Annotated[
    str | None, typer.Option("--baseline-file", metavar="PATH", help="a baseline file")
]
ReportDir = Annotated[
    str | None,
    typer.Option(
        "--out", metavar="DIR", help="where the report goes (reports/evaluations/NAME-vN)"
    ),
]
