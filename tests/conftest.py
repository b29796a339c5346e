"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Restore torch's thread count after every test (runs set ``trainer.num_threads`` in the test process)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One proxy feature cache per test module (generated once, shared by its runs)."""
    return tmp_path_factory.mktemp("proxy-cache")
