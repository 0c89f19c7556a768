"""The board catalog: one YAML file per board in potatura/boards/catalog/, every figure sourced.

A figure is a mapping {value, source} with optional `verify: true` (docs/hardware.md tags the figure
[check], or the figure is not in docs/hardware.md: check it against the named vendor document before
relying on it) and `note`. `load_catalog()` parses and validates every file once; a malformed file
is a ConfigError naming the file and the field.

Each board has a `backends:` map: per hardware backend, the figures that backend needs (hls4ml:
`board`, the hls4ml VivadoAccelerator template board). Files of the earlier form, with
`shell.hls4ml_board` instead, still load (it becomes backends.hls4ml.board).

Resource figures are whole-device counts: on Alveo cards the shell takes part of the device, so
the usable share is lower (potatura's fitter keeps a margin, hwgen.max_utilization).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from potatura.errors import ConfigError

CATALOG_DIR = Path(__file__).with_name("catalog")
SHELLS = ("zynq-ps-axi-dma", "alveo-xrt")
FAMILIES = ("zynq-7000", "zynq-ultrascale+", "alveo")
# Figures every board must have (dotted paths into the YAML document).
REQUIRED = ("part", "resources.lut", "resources.ff", "resources.dsp", "resources.bram36", "resources.bram18",
            "resources.uram", "clock.default_mhz", "memory.size_mb", "memory.type", "memory.bandwidth_gbs",
            "pynq.images", "pynq.python", "shell.type")
# Catalog order of `potatura boards list`: the embedded boards first, then Alveo cards, each by size.
ORDER = ("pynq-z1", "pynq-z2", "ultra96-v2", "kv260", "zcu104", "zcu102",
         "alveo-u50", "alveo-u200", "alveo-u280", "alveo-u250")


@dataclass(frozen=True)
class Board:
    """One board. Resources are device counts; clock in MHz; memory in MB and GB/s."""

    name: str
    description: str
    family: str  # zynq-7000 | zynq-ultrascale+ | alveo
    part: str
    lut: int
    ff: int
    dsp: int
    bram18: int  # HLS reports count 18Kb block RAMs: 2 per BRAM36
    uram: int
    clock_mhz: float
    shell: str  # zynq-ps-axi-dma | alveo-xrt
    memory_mb: int
    memory_type: str
    bandwidth_gbs: float
    pynq_images: tuple[str, ...]
    python: str | None
    board_part: str | None = None  # Vivado board-file name (Zynq boards)
    ps_ip: str | None = None  # VLNV without version of the processing system IP (Zynq boards)
    platform: str | None = None  # XRT platform (Alveo)
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # dotted figure -> source
    verify: tuple[str, ...] = ()  # dotted figures to check against the vendor document
    backends: dict[str, dict] = field(default_factory=dict, compare=False)  # backend -> {option: value}
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # the parsed YAML document

    @property
    def bram36(self) -> int:
        return self.bram18 // 2

    @property
    def is_zynq(self) -> bool:
        return self.shell == "zynq-ps-axi-dma"

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def backend_option(self, backend: str, option: str):
        """A backend's figure for this board (backends.<backend>.<option>); missing is a ConfigError."""
        try:
            return self.backends[backend][option]
        except KeyError:
            raise ConfigError(f"board catalog {self.name}.yaml: backends.{backend}.{option} is missing (the "
                              f"{backend} backend needs it for this board)") from None

    def resources(self) -> dict[str, int]:
        """Device resources as the fitter counts them (BRAM in 18Kb blocks)."""
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram18": self.bram18, "uram": self.uram}


def _figures(doc: Any, prefix: str = "") -> dict[str, dict]:
    """Every {value, source} mapping in `doc`, by dotted path."""
    out: dict[str, dict] = {}
    if isinstance(doc, dict):
        if "value" in doc:
            out[prefix] = doc
            return out
        for key, sub in doc.items():
            out.update(_figures(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def parse_board(path: Path) -> Board:
    """Parse and validate one catalog file."""
    where = f"board catalog {path.name}"
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of fields")
    name = doc.get("name")
    if name != path.stem:
        raise ConfigError(f"{where}: field name is {name!r}, expected the file's stem {path.stem!r}")
    figures = _figures({k: v for k, v in doc.items() if k not in ("name", "description", "family")})
    if "shell.hls4ml_board" in figures:  # the earlier form
        if any(k.startswith("backends.hls4ml.") for k in figures):
            raise ConfigError(f"{where}: shell.hls4ml_board and backends.hls4ml are both set; keep backends.hls4ml")
        figures["backends.hls4ml.board"] = figures.pop("shell.hls4ml_board")
    for dotted, fig in figures.items():
        src = fig.get("source")
        if not isinstance(src, str) or not src.strip():
            raise ConfigError(f"{where}: {dotted}: every figure needs a non-empty source")
        extra = set(fig) - {"value", "source", "verify", "note"}
        if extra:
            raise ConfigError(f"{where}: {dotted}: unknown keys {sorted(extra)}; accepted: value, source, verify, note")
    for dotted in REQUIRED:
        if dotted not in figures:
            raise ConfigError(f"{where}: required figure {dotted} is missing (a {{value, source}} mapping)")
    family = doc.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"{where}: family {family!r}; accepted: {', '.join(FAMILIES)}")

    def value(dotted: str, kind: type, optional: bool = False):
        fig = figures.get(dotted)
        if fig is None:
            return None
        v = fig["value"]
        if v is None and optional:
            return None
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(f"{where}: {dotted}: expected {kind.__name__}, got {v!r}")
        if kind in (int, float) and v < 0:
            raise ConfigError(f"{where}: {dotted}: must be >= 0, got {v}")
        return v

    bram36 = value("resources.bram36", int)
    bram18 = value("resources.bram18", int)
    if bram18 != 2 * bram36:
        raise ConfigError(f"{where}: resources.bram18 = {bram18} is not 2 x resources.bram36 = {2 * bram36}")
    shell = value("shell.type", str)
    if shell not in SHELLS:
        raise ConfigError(f"{where}: shell.type {shell!r}; accepted: {', '.join(SHELLS)}")
    if shell == "alveo-xrt" and "shell.platform" not in figures:
        raise ConfigError(f"{where}: an alveo-xrt board needs shell.platform (the XRT platform for v++)")
    if shell == "zynq-ps-axi-dma" and "shell.ps_ip" not in figures:
        raise ConfigError(f"{where}: a zynq-ps-axi-dma board needs shell.ps_ip (the processing system VLNV)")
    ps_ip = value("shell.ps_ip", str, optional=True)
    if ps_ip is not None and len(ps_ip.split(":")) != 3:
        # The block-design Tcl looks the version up in the installed Vivado (ps_ip:*): a version here
        # would make that search match nothing.
        raise ConfigError(f"{where}: shell.ps_ip {ps_ip!r}: expected vendor:library:name without a version "
                          "(e.g. xilinx.com:ip:processing_system7)")
    backends: dict[str, dict] = {}
    for dotted in figures:
        if dotted.startswith("backends."):
            parts = dotted.split(".")
            if len(parts) != 3:
                raise ConfigError(f"{where}: {dotted}: expected backends.<backend>.<figure>")
            backends.setdefault(parts[1], {})[parts[2]] = figures[dotted]["value"]
    if not backends:
        raise ConfigError(f"{where}: no backends map: list what each hardware backend needs, e.g. "
                          "backends: {hls4ml: {board: {value: pynq-z2, source: ...}}}")
    from potatura.hw.backends import spec_names

    unknown = sorted(set(backends) - set(spec_names()))
    if unknown:
        raise ConfigError(f"{where}: backends.{unknown[0]}: unknown backend; known backends: {', '.join(spec_names())}")
    images = value("pynq.images", list)
    clock = value("clock.default_mhz", float)
    if clock <= 0:
        raise ConfigError(f"{where}: clock.default_mhz must be > 0")
    return Board(
        name=name, description=str(doc.get("description", "")), family=family,
        part=value("part", str), lut=value("resources.lut", int), ff=value("resources.ff", int),
        dsp=value("resources.dsp", int), bram18=bram18, uram=value("resources.uram", int),
        clock_mhz=clock, shell=shell, memory_mb=value("memory.size_mb", int),
        memory_type=value("memory.type", str), bandwidth_gbs=value("memory.bandwidth_gbs", float),
        pynq_images=tuple(str(i) for i in images), python=value("pynq.python", str, optional=True),
        board_part=value("board_part", str, optional=True), backends=backends,
        ps_ip=ps_ip, platform=value("shell.platform", str, optional=True),
        sources={k: f["source"] for k, f in figures.items()},
        verify=tuple(k for k, f in figures.items() if f.get("verify")),
        raw=doc,
    )


@functools.lru_cache(maxsize=4)
def _load(directory: Path) -> tuple[Board, ...]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ConfigError(f"board catalog: no *.yaml files in {directory}")
    boards = {b.name: b for b in (parse_board(p) for p in files)}
    rank = {n: i for i, n in enumerate(ORDER)}
    return tuple(sorted(boards.values(), key=lambda b: (rank.get(b.name, len(ORDER)), b.name)))


def load_catalog(directory: Path | None = None) -> dict[str, Board]:
    """Every board of the catalog by name, embedded boards first, each group by size."""
    return {b.name: b for b in _load(Path(directory or CATALOG_DIR).resolve())}


def board_names() -> list[str]:
    return list(load_catalog())


def get_board(name: str) -> Board:
    """The board called `name`; an unknown name is a ConfigError listing the known boards."""
    catalog = load_catalog()
    if name not in catalog:
        raise ConfigError(f"unknown board {name!r}; known boards: {', '.join(catalog)}")
    return catalog[name]
