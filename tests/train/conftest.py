import pytest


@pytest.fixture(scope="module")
def digits_splits_module():
    from potatura.config import DataConfig
    from potatura.data import load_dataset

    return load_dataset(DataConfig(), seed=0)
