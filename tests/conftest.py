import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run beside other work on 2 cores; one torch thread keeps them predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
