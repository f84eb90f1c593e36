"""Fixtures of the data tests: an isolated dataset cache, and a spy on torchvision's IDX reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.datasets.mnist as tv_mnist


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("IOCANE_DATA_CACHE", str(cache))
    return cache


@pytest.fixture
def idx_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the files torchvision's own IDX reader opens (it still does the reading)."""
    paths: list[str] = []
    real = tv_mnist.read_image_file

    def spy(path: str):
        paths.append(path)
        return real(path)

    monkeypatch.setattr(tv_mnist, "read_image_file", spy)
    return paths
