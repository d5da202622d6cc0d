"""Shared pytest fixtures for the scaug test suite."""

import os
from pathlib import Path

import pytest

DATA_DIR_ENV = "SCAUG_DATA_DIR"


@pytest.fixture(scope="session")
def data_dir():
    """Folder of the shared real data sets, from ``SCAUG_DATA_DIR``; skips the test if unset."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        pytest.skip(
            f"{DATA_DIR_ENV} is not set; point it at the shared data folder to run this test"
        )
    return Path(value)
