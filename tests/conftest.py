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


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny test models run fastest on one thread, and a busy machine slows many threads badly."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
