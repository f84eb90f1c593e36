"""The settings object: every environment variable iocane reads, read when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from iocane.base import settings as settings_module
from iocane.base.settings import Settings, resolve_device, settings


def test_variables_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOCANE_USER", raising=False)
    assert settings().user is None
    monkeypatch.setenv("IOCANE_USER", "reviewer-a")
    assert settings().user == "reviewer-a"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("IOCANE_DATA_CACHE", "")
    assert settings().tracking_uri is None
    assert settings().data_cache == Path("~/.cache/iocane/datasets")


def test_names_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOCANE_DEVICE", raising=False)
    monkeypatch.setenv("iocane_device", "cuda:7")
    monkeypatch.setenv("DEVICE", "cuda:7")
    assert settings().device is None


def test_the_cache_home_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert settings().cache_home == tmp_path
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings().cache_home == tmp_path / ".cache"


def test_iocane_device_overrides_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOCANE_DEVICE", "cpu")
    assert str(resolve_device()) == "cpu"


def test_the_docstring_table_lists_every_variable() -> None:
    documented = settings_module.__doc__ or ""
    for field in Settings.model_fields.values():
        assert f"| `{field.validation_alias}` |" in documented, field.validation_alias
