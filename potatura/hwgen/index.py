"""The projects a run's hwgen stage made, as later stages read them (one reader for sim, deploy, bench).

hwgen/index.json lists {board, backend, path (relative to the run directory), fits, csim}; runs made
before the index existed are read from hwgen/report.json.
"""

from __future__ import annotations

from pathlib import Path

from potatura.artifacts import read_json
from potatura.errors import DataError


def hwgen_projects(hwgen_dir: Path) -> list[dict]:
    """[{board, backend, path, fits}] of a run's hwgen stage (index.json, else report.json)."""
    index = hwgen_dir / "index.json"
    if index.is_file():
        run_dir = hwgen_dir.parent
        return [{"board": e["board"], "backend": e["backend"], "path": run_dir / e["path"], "fits": e.get("fits", True)}
                for e in read_json(index)]
    report = hwgen_dir / "report.json"
    if not report.is_file():
        raise DataError(f"{hwgen_dir}: neither index.json nor report.json (run the hwgen stage)")
    return [{"board": p["board"], "backend": p["backend"], "path": hwgen_dir / p["dir"], "fits": p.get("fits", True)}
            for p in read_json(report)["projects"]]
