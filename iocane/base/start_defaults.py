"""The train stage's defaults that depend on where training starts.

``train.lr`` is ``null`` in params.yaml: from scratch it is what it always was (after iocane's own
natural warmup); from the user's ``model.weights`` (an already trained model, whose clean accuracy
a large step wrecks) it is the value measured best by ``benchmarks/own_model.py --grid`` (README,
"Harden your own model"). A number written anywhere (params.yaml, an overlay, ``--set``) always
wins: only a null is filled, before the tree is validated (``iocane.base.config.Config``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from iocane.base.config_errors import Rule

# key -> start -> value. The grid also measured train.eps_ramp_epochs: its default, 2, is the
# best from weights too, so it stays a plain number in params.yaml.
START_DEFAULTS: dict[str, dict[str, Any]] = {"lr": {"scratch": 0.05, "weights": 0.01}}
SOURCE = "benchmarks/own_model.py"


def by_start_description(key: str) -> str:
    """The schema's words for a key filled by the start, with both values."""
    scratch, weights = START_DEFAULTS[key]["scratch"], START_DEFAULTS[key]["weights"]
    return f"null = {scratch:g} from scratch, {weights:g} from model.weights, measured by {SOURCE}"


def nullable_number(kind: type) -> Any:
    """``kind`` (above 0) in the loaded config, where a null never gets, but ``null`` or a number
    in the JSON schema, so that editors accept params.yaml's null."""
    number = {"type": "integer" if kind is int else "number", "exclusiveMinimum": 0}
    return Annotated[kind, WithJsonSchema({"anyOf": [number, {"type": "null"}]})]


def fill_by_start(document: Any) -> tuple[Any, tuple[str, ...]]:
    """``document`` with each null of START_DEFAULTS in ``train`` replaced by the default for its
    start (``model.weights`` given or not), and one log line per key filled for a start from
    weights. Anything malformed is passed through for the validation to name."""
    train, model = _section(document, "train"), _section(document, "model")
    if train is None or model is None:
        return document, ()
    start = "scratch" if model.get("weights") is None else "weights"
    filled, notes = dict(train), []
    for key, values in START_DEFAULTS.items():
        if key not in train or train[key] is not None:
            continue
        if train.get("optimizer") in ("adam", "adamw"):
            # The values were measured with SGD; Adam's steps are on another scale entirely.
            raise Rule(
                f"train.{key}",
                f"null has a default for train.optimizer sgd only; set it for "
                f"{train['optimizer']} (1e-3 is Adam's usual)",
            )
        filled[key] = values[start]
        if start == "weights":
            notes.append(
                f"train.{key} {values[start]:g}: the default for a start from model.weights "
                f"({SOURCE})"
            )
    return {**document, "train": filled}, tuple(notes)


def _section(document: Any, name: str) -> dict[str, Any] | None:
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else None
