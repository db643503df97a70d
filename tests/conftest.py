"""Test-wide set-up: must run before torch is imported."""
import os

# Idle OpenMP threads sleep instead of spinning (the CLI does the same); see automl_pipeline/cli.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for modules of many tiny convolutions: on an oversubscribed CPU, several
    threads made them dramatically slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
