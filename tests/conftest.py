import os

import pytest
import torch

# Two cores are shared by everything in CI: keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("POTATURA_TEST_THREADS", "1")))


@pytest.fixture
def digits_splits():
    from potatura.config import DataConfig
    from potatura.data import load_dataset

    return load_dataset(DataConfig(), seed=0)
