"""torch CUDA target: synchronized timing on a GPU (marker gpu; runs where a CUDA device is)."""

import numpy as np
import pytest
import torch

from potatura.bench.targets import CudaTarget

pytestmark = pytest.mark.gpu


def test_cuda_target_synchronizes_and_measures_a_conv_net():
    if not torch.cuda.is_available():
        pytest.fail("marked gpu but no CUDA device is visible")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 6 * 6, 10))
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    target = CudaTarget("cuda tiny", model, x, threads=1, description="tiny conv net")
    syncs = []
    original = target.synchronize
    target.synchronize = lambda: (syncs.append(1), original())
    (result,) = target.measure([1, 256], iterations=30, warmup=5)
    target.close()
    assert result.device == "gpu" and result.kind == "measured"
    assert len(syncs) == 2 * 35  # every call, warm-up included, waits for the stream before the clock
    assert result.details["gpu"] == torch.cuda.get_device_name(0)
    one, big = result.single_stream, result.point(256)
    assert 0 < one.p50_s <= one.p99_s and big.runs == 30
