"""CPU threads for torch: the setting, its default, and its record in the manifest.

Results of training depend on the number of intra-op threads (float sums are split differently),
so the setting is chosen once per run, the same for every stage, and recorded with each stage.

    --threads N / POTATURA_THREADS=N    exactly N threads
    default                             1 thread for a small model (< SMALL_MODEL_PARAMETERS
                                        parameters: LeNet-5, LeNet-300, ResNet-8), else the CPUs
                                        this process may run on (os.sched_getaffinity: a container
                                        or taskset limit, not the machine's core count)

OpenMP's threads wait for work passively (OMP_WAIT_POLICY=PASSIVE, set before torch is
imported unless the user set it): spinning threads made a shared 2-core machine 10-27x slower
(issue 9 item 7; scripts/bench_threads.py measures it).
"""

from __future__ import annotations

import os
from typing import Optional

from potatura.errors import ConfigError

SMALL_MODEL_PARAMETERS = 1_000_000
ENV = "POTATURA_THREADS"
# Input shape per dataset for counting a zoo model's parameters before the data is read (the
# count only decides the thread default; idx/npz take MNIST's size).
_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}


def prepare_environment() -> None:
    """Call before torch is imported: passive OpenMP waiting unless the user chose otherwise."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def requested() -> Optional[int]:
    """The thread count the user asked for (--threads or POTATURA_THREADS), or None."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{ENV}={value!r}: expected a whole number of threads >= 1")
    return int(value)


def model_parameters(cfg) -> Optional[int]:
    """Parameters of the flow's zoo model (built on torch's meta device: no memory, no data)."""
    import torch

    from potatura.models import build_model

    shape = _SHAPES.get(cfg.data.dataset, (1, 28, 28))
    try:
        with torch.device("meta"):
            model = build_model(cfg.model.name, shape, 10, **cfg.model.options)
    except Exception:  # a model that needs another input size: the default falls back to all CPUs
        return None
    return sum(p.numel() for p in model.parameters())


def choose(cfg=None, parameters: Optional[int] = None) -> dict:
    """{threads, source, available_cpus}: the setting for a run of `cfg` (or for a model of
    `parameters` parameters, in the commands that work on one model file)."""
    cpus = available_cpus()
    n = requested()
    if n is not None:
        return {"threads": n, "source": f"--threads / {ENV}", "available_cpus": cpus}
    params = parameters if parameters is not None else model_parameters(cfg) if cfg is not None else None
    if params is not None and params < SMALL_MODEL_PARAMETERS:
        return {"threads": 1, "source": f"default: small model ({params:,} parameters)", "available_cpus": cpus}
    return {"threads": cpus, "source": "default: CPUs available to the process", "available_cpus": cpus}


def apply(setting: dict) -> dict:
    """Set torch's intra-op threads to setting["threads"]; return the record for the manifest."""
    import torch

    torch.set_num_threads(int(setting["threads"]))
    return {**setting, "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)")}
