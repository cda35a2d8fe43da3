"""The repository the tests run in, wherever a test module lies below tests/."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
