"""Where the project under test lives."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
