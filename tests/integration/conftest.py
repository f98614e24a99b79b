"""Integration tests: one torch thread (2 shared cores; oversubscribed threads are slower)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def pytest_configure(config):
    config.addinivalue_line("markers", "flwr_run(name): the test reads the results of a real `flwr run` (flwr_runs.RUNS)")
