"""Shared fixture for the image tests: fixed seed, one torch thread."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def seed_and_one_thread():
    """Fixed seed; one torch thread (small images; spares a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
