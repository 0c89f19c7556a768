"""Hardware-in-the-loop check of a board (or the emulated one): golden, throughput, bounded soak.

`potatura deploy --check URL` runs it: each step is a JUnit test case (so a CI system shows it), and
the table it prints says which numbers are measured and which emulated.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from potatura.deploy.client import BoardClient, wait_ready
from potatura.deploy.errors import DeadlineError, DeployError, LinkError


@dataclass
class Step:
    name: str
    passed: bool
    seconds: float
    detail: str
    error: Optional[str] = None
    data: dict = field(default_factory=dict)


def run_check(client: BoardClient, bundle_dir, batch_sizes=(1, 8, 32), iterations: int = 10, warmup: int = 2,
              soak_seconds: float = 10.0, soak_max_runs: int = 1000, recover=None) -> list[Step]:
    """deploy -> golden (bit-exact or the manifest's tolerance) -> throughput -> soak (golden repeated for
    at most soak_seconds / soak_max_runs). A failed step is recorded and the later ones still run
    when they can (a failed deploy ends the check).

    recover: called after a step hangs (DeadlineError) or loses the link (LinkError), e.g. a labgrid
    power cycle (potatura.deploy.lab); the step then runs once more and says it was recovered.
    """
    steps: list[Step] = []

    def step(name: str, fn):
        t0 = time.perf_counter()
        try:
            detail, data = fn()
            steps.append(Step(name, True, time.perf_counter() - t0, detail, data=data))
            return True
        except (DeadlineError, LinkError) as exc:
            if recover is None:
                steps.append(Step(name, False, time.perf_counter() - t0, "failed", f"{exc.kind}: {exc}"))
                return False
            recover()
            wait_ready(client, timeout_s=client.timeout_s)
            try:
                detail, data = fn()
            except DeployError as again:
                steps.append(Step(name, False, time.perf_counter() - t0, "failed after recovery",
                                  f"{exc.kind}, then after recovery {again.kind}: {again}"))
                return False
            steps.append(Step(name, True, time.perf_counter() - t0, f"{detail} (recovered after {exc.kind})",
                              data=dict(data, recovered_from=exc.kind)))
            return True
        except DeployError as exc:
            steps.append(Step(name, False, time.perf_counter() - t0, "failed", f"{exc.kind}: {exc}"))
            return False

    def deploy():
        info = client.deploy(bundle_dir)
        loaded = info["loaded"]
        return f"{loaded['board']} ({info['device']}), bundle {loaded['id']}", info

    def golden():
        report = client.golden_check(bundle_dir)
        return (f"{report['exact']}/{report['samples']} bit-exact, max |code diff| "
                f"{report['max_abs_code_difference']}"), report

    def throughput():
        bench = client.benchmark(batch_sizes, iterations, warmup)
        parts = []
        for row in bench["rows"]:
            parts.append(f"batch {row['batch']}: hw {row['hardware_s']['p50'] * 1e6:.1f} us "
                         f"({bench['hardware_source']}), e2e {row['end_to_end_s']['p50'] * 1e3:.2f} ms "
                         f"({'measured' if bench['hardware_source'] == 'measured' else 'emulated'})")
        return "; ".join(parts), bench

    def soak():
        end = time.monotonic() + soak_seconds
        runs = 0
        while runs < soak_max_runs and time.monotonic() < end:
            client.golden_check(bundle_dir)
            runs += 1
        return f"{runs} golden runs in {soak_seconds:g} s budget, all bit-exact", {"runs": runs}

    if step("deploy", deploy):
        step("golden", golden)
        step("throughput", throughput)
        step("soak", soak)
    return steps


def table(steps: list[Step]) -> str:
    rows = [("step", "result", "seconds", "detail")]
    for s in steps:
        rows.append((s.name, "PASS" if s.passed else "FAIL", f"{s.seconds:.2f}", s.error or s.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


def junit_xml(steps: list[Step], path, suite: str = "potatura-hil") -> Path:
    from potatura.artifacts import write_text

    root = ET.Element("testsuite", name=suite, tests=str(len(steps)),
                      failures=str(sum(not s.passed for s in steps)), time=f"{sum(s.seconds for s in steps):.3f}")
    for s in steps:
        case = ET.SubElement(root, "testcase", classname=suite, name=s.name, time=f"{s.seconds:.3f}")
        if not s.passed:
            ET.SubElement(case, "failure", message=(s.error or "")[:200]).text = s.error
        else:
            ET.SubElement(case, "system-out").text = s.detail
    ET.indent(root)
    return write_text(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
