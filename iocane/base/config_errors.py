"""One-line messages for a params document that cannot run, each naming its key.

pydantic reports every problem with a location (``("train", "eps")``) and a type
(``float_type``); ``explain`` turns the first one into ``train.eps: expected a number, got str
'abc'``, the message a user fixes the file from. Unknown keys come first: a typo (``epsilon``)
also makes its key (``eps``) missing, and the typo is the thing to fix.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A params document that cannot be run; the message names the key (``key``, when known)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class Rule(ValueError):
    """Raised by the tree's validators: ``key`` is relative to the model that raised it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def explain(error: ValidationError, root: type[BaseModel]) -> ConfigError:
    """The first of pydantic's errors, as a ConfigError naming its dotted key."""
    order = {"extra_forbidden": 0, "invalid_key": 0, "missing": 1}
    first = min(error.errors(), key=lambda item: order.get(item["type"], 2))
    loc = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    rule = ctx.get("error")
    if isinstance(rule, Rule):  # a model validator's rule, or a list that is not one
        key = _dotted((*loc, *rule.key.split("."))) if rule.key else _dotted(loc)
        return ConfigError(f"{key}: {rule.message}", key=key)
    key = _dotted(loc)
    if first["type"] in ("extra_forbidden", "invalid_key"):  # YAML keys need not be strings (1:)
        key = ".".join(filter(None, (_dotted(loc[:-1]), str(loc[-1]))))
    return ConfigError(_message(first, loc, key, root), key=key)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool) and text:
            text += f"[{part}]"
        elif part != "":
            text += f".{part}" if text else str(part)
    return text


def _message(error: Any, loc: tuple[Any, ...], key: str, root: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    if kind in ("extra_forbidden", "invalid_key"):
        parent = _model_at(root, loc[:-1])
        known = ", ".join(parent.model_fields) if parent else ""
        where = _dotted(loc[:-1]) or "the params file"
        return f"unknown key {key} (known keys in {where}: {known})"
    if kind == "missing":
        return f"missing key {key}"
    where = key or "the params file"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: expected a mapping, got {describe(value)}"
    if kind == "bool_type":
        return f"{where}: expected true or false, got {describe(value)}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"{where}: expected an integer, got {describe(value)}"
    if kind == "finite_number" or (kind == "float_type" and type(value) is int):
        return f"{where}: expected a finite number, got {value!r}"  # an int too large for a float
    if kind in ("float_type", "float_parsing"):
        hint = " (YAML reads 5e-4 as text: write 5.0e-4)" if _parses_as_float(value) else ""
        return f"{where}: expected a number, got {describe(value)}{hint}"
    if kind in ("string_type", "string_too_short"):
        return f"{where}: expected a non-empty string, got {describe(value)}"
    if kind == "literal_error":
        return f"{where}: {value!r} is not one of {error['ctx']['expected']}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {_range(root, loc, error['ctx'])}"
    return f"{where}: {error['msg']}"  # a type this module does not word yet: pydantic's text


def _range(root: type[BaseModel], loc: tuple[Any, ...], ctx: dict[str, Any]) -> str:
    """``must be in (0, 0.5)`` for a field bounded both ways, else ``must be >= 0``; with the
    field's description, which says what the bound's edge means (``0 = all``)."""
    parent = _model_at(root, loc[:-1])
    field = parent.model_fields.get(loc[-1]) if parent and isinstance(loc[-1], str) else None
    bounds: dict[str, Any] = dict(ctx)
    for item in field.metadata if field else ():  # annotated_types' Gt(gt=0), Le(le=1)...
        for name in ("gt", "ge", "lt", "le"):
            if getattr(item, name, None) is not None:
                bounds[name] = getattr(item, name)
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    high = (
        (")", bounds["lt"]) if "lt" in bounds else ("]", bounds["le"]) if "le" in bounds else None
    )
    if low and high:
        text = f"must be in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    else:
        symbol, bound = next(
            (symbol, bounds[name])
            for name, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
            if name in bounds
        )
        text = f"must be {symbol} {bound:g}"
    return f"{text} ({field.description})" if field and field.description else text


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        # An optional section (``SpatialBudget | None``) names its keys as the section does.
        models = [arg for arg in get_args(field.annotation) if arg is not type(None)]
        model = models[0] if len(models) == 1 else field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return model


def _parses_as_float(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
