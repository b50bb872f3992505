import os

import pytest
import torch

# Two cores on CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run a test on one thread, restoring the setting afterwards.

    Small convolutions and matrices gain little from a second thread, and on a busy 2-core machine two
    OpenMP threads that wait on each other made such tests up to 50 times slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
