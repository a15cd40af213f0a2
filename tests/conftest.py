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


# `make test` runs the modules on two workers (pytest-xdist, --dist loadfile: a module's tests, and so its
# module fixtures, stay on one worker), handing out modules in collection order. These run whole tiny
# studies through Snakemake and take most of the suite's time (measured on the 2-core machine, slowest
# first); starting them first lets both workers finish together instead of one waiting on a late long
# module. Order only: every module runs whichever way it is scheduled.
SLOWEST_FIRST = ("test_workflow", "test_user_data", "test_plan_edits", "test_walkthrough", "test_slurm",
                 "test_leaderboard_workflow", "test_gpu_slots", "test_job_server", "test_config_options", "test_engine",
                 "test_report_figures")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
