"""Fixtures shared by the test files."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread, and two threads on a busy 2-core machine can
    spin for seconds at every parallel region; restore the setting afterwards.
    A test file opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
