"""Small sweeps on digits: a 24-12 MLP (LeNet-300 style), 2 epochs, train -> simplify -> quant."""

import textwrap

import pytest

SWEEP = """
name: {name}
runs_dir: {runs}
flow:
  stages: [train, simplify, quant]
  model: {{name: lenet300, options: {{hidden: [24, 12]}}}}
  train: {{method: serene, epochs: {epochs}, batch_size: {batch}, preset: "off", pwe: 1, finetune_epochs: 0}}
  quant: {{calibration_samples: 128}}
space:
{space}
objectives: [accuracy, weight_bytes]
n_trials: {n_trials}
sampler: {{name: {sampler}}}
workers: 2
stage_cache: {cache}
"""

GRID_6 = """
  quant.weight_bits: {choices: [4, 6, 8]}
  train.lr: {choices: [0.05, 0.1]}
"""


@pytest.fixture
def write_sweep(tmp_path):
    def write(name="sw", space=GRID_6, n_trials=6, sampler="grid", epochs=2, batch=64, cache="true"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SWEEP.format(name=name, runs=tmp_path / "runs", space=textwrap.indent(textwrap.dedent(space).strip(), "  "),
                                     n_trials=n_trials, sampler=sampler, epochs=epochs, batch=batch, cache=cache))
        return path

    return write


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, one thread each (as `potatura sweep` makes by default)."""
    import logging

    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
