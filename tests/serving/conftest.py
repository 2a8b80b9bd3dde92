import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Tiny models gain nothing from threads, and on a busy machine spinning threads cost seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
