import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine the threads of two
    processes fight; one thread keeps the timing steady. (Workflow tests run jobs in subprocesses,
    which set their own thread count.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
