"""Write a deploy bundle from a hwgen project (host side): potatura deploy --bundle-only.

Reads the hwgen project directory (runs/<name>/hwgen/<board>/<backend>/: manifest.json,
design.json + design_weights.npz, project/overlay/*.bit/.hwh when built), the quant stage's
golden.npz, and asks the simulator (potatura.sim.api) for shapes, types and cycles. Writes
runs/<name>/deploy/<board>/<backend>/ (layout in potatura.deploy.bundle).
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np

from potatura import __version__
from potatura.artifacts import atomic_path, file_sha256, read_json, write_json, write_text
from potatura.deploy import bundle as bundles
from potatura.errors import DataError, UnsupportedError

BOARD_SIDE_MODULES = ("__init__.py", "errors.py", "driver.py", "bundle.py", "agent.py")
# assign_bd_address puts the first AXI-lite slave of the PS master port here (64 KiB windows):
DEFAULT_DMA_ADDRESS = {"zynq-7000": 0x4040_0000, "zynq-ultrascale+": 0xA000_0000}
DMA_LENGTH_WIDTH = 26  # c_sg_length_width in build_overlay.tcl: LENGTH holds up to 2**26 - 1 bytes
WIRE = {"float": "float32", "double": "float64"}


def _type_spec(spec_type, shape, layout: str, wire: str) -> dict:
    t = spec_type
    return {"shape": [int(d) for d in shape], "layout": layout, "type": t.to_dict(), "ap_type": t.ap(),
            "frac": int(t.frac), "min_code": int(t.min_code), "max_code": int(t.max_code),
            "encoding": f"integer codes of {t.ap()}: value = code * 2**-{t.frac}",
            "wire": {"dtype": wire, "bytes_per_sample": int(np.prod(shape)) * np.dtype(wire).itemsize,
                     "words": "exact values of the type, channels-last, one AXI-stream packet per batch"}}


def golden_codes(golden_path: Path, acc, samples: Optional[int]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(x_codes, y_codes, provenance) in the accelerator's layout from quant's golden.npz.

    x_codes: golden's x_codes when present (NCHW codes are transposed to the accelerator's layout),
    else the host encoding of x (acc.encode). y_codes: golden's y_codes, else its reference values y
    when they sit exactly on the output type's grid; only if neither, the simulator's outputs.
    """
    try:
        with np.load(golden_path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{golden_path}: not a readable .npz file: {exc}") from None
    if "x" not in arrays and "x_codes" not in arrays:
        raise DataError(f"{golden_path}: neither x nor x_codes (golden inputs); arrays: {', '.join(arrays)}")
    n = len(arrays.get("x_codes", arrays.get("x")))
    n = n if samples is None else min(n, samples)
    in_shape, out_shape = tuple(acc.input_shape), tuple(acc.output_shape)
    if "x_codes" in arrays:
        x = arrays["x_codes"][:n].astype(np.int64)
        if x.shape[1:] != in_shape and x.ndim == 4 and x.shape[1:] == (in_shape[2], in_shape[0], in_shape[1]):
            x = x.transpose(0, 2, 3, 1)
        x_source = "golden.npz x_codes"
    else:
        x = np.asarray(acc.encode(arrays["x"][:n]), dtype=np.int64)
        x_source = "golden.npz x, encoded by the simulator's host encoding"
    if x.shape[1:] != in_shape:
        raise DataError(f"{golden_path}: golden inputs of shape {list(x.shape[1:])}, the accelerator takes {list(in_shape)}")
    y_source = None
    if "y_codes" in arrays:
        y = arrays["y_codes"][:n].astype(np.int64).reshape((n,) + out_shape)
        y_source = "golden.npz y_codes (quant's integer reference)"
    elif "y" in arrays:
        scaled = np.asarray(arrays["y"][:n], dtype=np.float64) * 2.0 ** acc.output_type.frac
        if scaled.size == n * int(np.prod(out_shape)) and np.all(scaled == np.round(scaled)):
            y = np.round(scaled).astype(np.int64).reshape((n,) + out_shape)
            y_source = "golden.npz y (QONNX reference values) as codes of the output type"
    simulated = np.asarray(acc.run(x), dtype=np.int64).reshape((n,) + out_shape)
    if y_source is None:
        y, y_source = simulated, "potatura simulator (golden.npz has no reference on the output grid)"
    agree = int((simulated.reshape(n, -1) == y.reshape(n, -1)).all(axis=1).sum())
    return x, y, {"x": x_source, "y": y_source, "simulator_agrees": f"{agree}/{n}", "samples": n}


def _find_overlay(project_dir: Path, name: str) -> tuple[Optional[Path], Optional[Path]]:
    overlay = project_dir / "project" / "overlay"
    bit, hwh = overlay / f"{name}.bit", overlay / f"{name}.hwh"
    return (bit, hwh) if bit.is_file() and hwh.is_file() else (None, None)


def dma_address_from_hwh(hwh: Path, instance: str = "hier_0_axi_dma_0") -> Optional[tuple[int, int]]:
    """(base, range) of the DMA's register window in a Vivado .hwh (None when not found)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(hwh).getroot()
    except (ET.ParseError, OSError):
        return None
    for memrange in root.iter("MEMRANGE"):
        if memrange.get("INSTANCE") == instance and memrange.get("BASEVALUE"):
            base, high = int(memrange.get("BASEVALUE"), 16), int(memrange.get("HIGHVALUE"), 16)
            return base, high - base + 1
    return None


def write_bundle(project_dir, golden_path, out_dir, *, samples: Optional[int] = 64, tolerance_codes: int = 0,
                 accelerator=None, model_name: Optional[str] = None) -> dict:
    """Write the bundle of one hwgen project into out_dir; return its manifest.

    accelerator: a potatura.sim.api Accelerator (default: load_project(project_dir)).
    """
    from potatura.boards.catalog import get_board
    from potatura.deploy.hwh import write_hwh

    project_dir, out_dir = Path(project_dir), Path(out_dir)
    hw_manifest_path = project_dir / "manifest.json"
    if not hw_manifest_path.is_file():
        raise DataError(f"{project_dir}: no manifest.json (not a hwgen project directory)")
    hw = read_json(hw_manifest_path)
    board = get_board(hw["board"])
    if not board.is_zynq:
        raise UnsupportedError(f"deploy: {board.name} is an {board.family} card (XRT shell); the PYNQ bundle supports "
                               "Zynq boards with the AXI DMA shell (pynq-z1, pynq-z2, ultra96-v2, zcu102, zcu104, kv260)")
    if accelerator is None:
        from potatura.sim.api import load_project

        accelerator = load_project(project_dir)
    acc = accelerator
    name = hw.get("project_name", "potatura_accel")
    x, y, provenance = golden_codes(Path(golden_path), acc, samples)

    if out_dir.exists():
        shutil.rmtree(out_dir)  # a bundle is rewritten whole: no file of an older one survives unlisted
    out_dir.mkdir(parents=True)
    files: list[str] = []

    in_wire = WIRE[hw.get("input", {}).get("axi_word", "float")]
    out_wire = WIRE[hw.get("output", {}).get("axi_word", "float" if acc.output_type.float_exact(24) else "double")]
    bit, hwh = _find_overlay(project_dir, name)
    overlay_dir = out_dir / "overlay"
    overlay_dir.mkdir()
    dma_addr = (DEFAULT_DMA_ADDRESS[board.family], 0x10000)
    address_source = "assign_bd_address default of build_overlay.tcl (the .hwh on the board is authoritative)"
    if bit is not None:
        shutil.copyfile(bit, overlay_dir / f"{name}.bit")
        shutil.copyfile(hwh, overlay_dir / f"{name}.hwh")
        found = dma_address_from_hwh(hwh)
        if found:
            dma_addr, address_source = found, f"{hwh.name} (Vivado hardware handoff)"
        bitstream = {"file": f"overlay/{name}.bit", "hwh": f"overlay/{name}.hwh", "placeholder": False,
                     "source": "built by Vivado (make overlay)"}
    else:
        write_text(overlay_dir / f"{name}.bit",
                   "potatura placeholder: this is not a bitstream. Build it with `make ip overlay` in the hwgen project "
                   f"({project_dir / 'project'}) and write the bundle again.\n")
        bitstream = {"file": f"overlay/{name}.bit", "hwh": f"overlay/{name}.hwh", "placeholder": True,
                     "note": "not built (Vivado not run): the emulated board runs this bundle; a real board needs the "
                             "bitstream",
                     "hwh_source": "generated by potatura from build_overlay.tcl's block design (emulated board)"}
    ip = {"dma": {"name": "hier_0/axi_dma_0", "vlnv": "xilinx.com:ip:axi_dma:7.1", "phys_addr": dma_addr[0],
                  "addr_range": dma_addr[1], "address_source": address_source},
          "accelerator": {"name": f"hier_0/{name}_axi_0", "vlnv": f"xilinx.com:hls:{name}_axi:1.0",
                          "control": "ap_ctrl_none",
                          "note": "hls4ml's AXI-stream wrapper is free-running (ap_ctrl_none): no control registers"}}
    in_spec = _type_spec(acc.input_type, acc.input_shape, "NHWC" if len(acc.input_shape) == 3 else "flat", in_wire)
    out_spec = _type_spec(acc.output_type, acc.output_shape, "NHWC" if len(acc.output_shape) == 3 else "flat", out_wire)
    if bit is None:
        write_hwh(overlay_dir / f"{name}.hwh", board, name, ip, in_bits=8 * np.dtype(in_wire).itemsize,
                  out_bits=8 * np.dtype(out_wire).itemsize)
    files += [f"overlay/{name}.bit", f"overlay/{name}.hwh"]

    with atomic_path(out_dir / "golden.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x_codes=x, y_codes=y)
    files.append("golden.npz")

    emulation = out_dir / "emulation"
    emulation.mkdir()
    for fname in ("design.json", "design_weights.npz"):
        if (project_dir / fname).is_file():
            shutil.copyfile(project_dir / fname, emulation / fname)
            files.append(f"emulation/{fname}")
    if "emulation/design.json" not in files:
        raise DataError(f"{project_dir}: no design.json (the hwgen stage writes it; rerun hwgen)")

    agent_root = out_dir / "agent" / "potatura"
    (agent_root / "deploy").mkdir(parents=True)
    package = Path(__file__).resolve().parents[1]
    for rel in ("__init__.py", "errors.py"):
        shutil.copyfile(package / rel, agent_root / rel)
        files.append(f"agent/potatura/{rel}")
    for rel in BOARD_SIDE_MODULES:
        shutil.copyfile(package / "deploy" / rel, agent_root / "deploy" / rel)
        files.append(f"agent/potatura/deploy/{rel}")

    cycles1 = acc.cycles(1)
    cycles_n = acc.cycles(len(x))
    manifest = {
        "format": bundles.BUNDLE_FORMAT, "driver_abi": bundles.DRIVER_ABI, "potatura_version": __version__,
        "model": model_name, "board": board.name, "platform": board.family, "part": board.part, "shell": board.shell,
        "pynq_images": list(board.pynq_images), "backend": hw.get("backend", "hls4ml"), "project_name": name,
        "clock_mhz": float(acc.clock_mhz), "bitstream": bitstream, "ip": ip,
        "dma": {"mode": "simple (no scatter-gather)", "length_width_bits": DMA_LENGTH_WIDTH,
                "max_transfer_bytes": (1 << DMA_LENGTH_WIDTH) - 1,
                "mm2s_data_width_bits": 8 * np.dtype(in_wire).itemsize,
                "s2mm_data_width_bits": 8 * np.dtype(out_wire).itemsize},
        "tensors": {"input": in_spec, "output": out_spec},
        "tolerance": {"max_abs_code_difference": int(tolerance_codes),
                      "meaning": "0: bit-exact; otherwise the largest |code difference| accepted per element"},
        "golden": {"file": "golden.npz", **provenance},
        "timing": {"latency_cycles": int(cycles1.latency_cycles), "interval_cycles": int(cycles1.interval_cycles),
                   "min_deadline_s": 1.0, "source": "simulated (potatura.sim)"},
        "sim": {"batch_1": cycles1.to_dict(), f"batch_{len(x)}": cycles_n.to_dict()},
        "emulation": {"dir": "emulation", "note": "the simulator's design: what the emulated board runs"},
        "hwgen": {"dir": str(project_dir), "manifest_sha256": file_sha256(hw_manifest_path)},
        "tools": {"numpy": np.__version__, "hls4ml": _version("hls4ml")},
    }
    manifest["files"] = {rel: bundles.sha256_file(out_dir / rel) for rel in files}
    write_json(out_dir / bundles.MANIFEST, manifest)
    return manifest


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None
