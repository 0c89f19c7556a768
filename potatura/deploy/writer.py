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
from potatura.artifacts import atomic_path, file_sha256, npz_read_error, read_json, write_json, write_text
from potatura.deploy import bundle as bundles
from potatura.errors import DataError, UnsupportedError

BOARD_SIDE_MODULES = ("__init__.py", "errors.py", "driver.py", "engine.py", "bundle.py", "agent.py")
# assign_bd_address puts the first AXI-lite slave of the PS master port here (64 KiB windows):
DEFAULT_DMA_ADDRESS = {"zynq-7000": 0x4040_0000, "zynq-ultrascale+": 0xA000_0000}
# the engine's s_axi_control is the only slave of the PS master port in the HLSinf-style block design
DEFAULT_ENGINE_ADDRESS = {"zynq-7000": 0x4000_0000, "zynq-ultrascale+": 0xA000_0000}
ENGINE_FILE = "engine.npz"
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
        raise npz_read_error(golden_path, exc) from None
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


def _overlay(project_dir: Path, out_dir: Path, name: str, instance: str, default: tuple[int, int]):
    """Copy the built bitstream and .hwh into out_dir/overlay (or write a placeholder, marked so);
    (built .bit or None, the manifest's bitstream section, (base, range) of `instance`, its source)."""
    overlay_dir = out_dir / "overlay"
    overlay_dir.mkdir()
    address, source = default, "assign_bd_address default of build_overlay.tcl (the .hwh on the board is authoritative)"
    bit, hwh = _find_overlay(project_dir, name)
    if bit is not None:
        shutil.copyfile(bit, overlay_dir / f"{name}.bit")
        shutil.copyfile(hwh, overlay_dir / f"{name}.hwh")
        found = dma_address_from_hwh(hwh, instance)
        if found:
            address, source = found, f"{hwh.name} (Vivado hardware handoff)"
        return bit, {"file": f"overlay/{name}.bit", "hwh": f"overlay/{name}.hwh", "placeholder": False,
                     "source": "built by Vivado (make overlay)"}, address, source
    write_text(overlay_dir / f"{name}.bit",
               "potatura placeholder: this is not a bitstream. Build it with `make ip overlay` in the hwgen project "
               f"({project_dir / 'project'}) and write the bundle again.\n")
    return None, {"file": f"overlay/{name}.bit", "hwh": None, "placeholder": True,
                  "note": "not built (Vivado not run): the emulated board runs this bundle; a real board needs the "
                          "bitstream and its .hwh"}, address, source


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


def bundle_protocol(project_dir) -> tuple[Optional[str], str]:
    """(protocol, "") when a bundle can be written for this hwgen project, else (None, the reason)."""
    path = Path(project_dir) / "manifest.json"
    if not path.is_file():
        return None, f"{project_dir}: no manifest.json (this project's backend describes no board interface)"
    hw = read_json(path)
    protocol = hw.get("protocol", "axi-stream-dma" if hw.get("backend", "hls4ml") == "hls4ml" else None)
    if protocol not in ("axi-stream-dma", "memory-mapped-engine"):
        return None, (f"no bundle writer for protocol {protocol!r} of backend {hw.get('backend')!r} (known: "
                      "axi-stream-dma, memory-mapped-engine)")
    return protocol, ""


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
    if hw.get("protocol") == "memory-mapped-engine":
        return _write_engine_bundle(hw, board, acc, project_dir, out_dir, x, y, provenance, tolerance_codes,
                                    model_name, hw_manifest_path)
    if hw.get("protocol", "axi-stream-dma") != "axi-stream-dma":
        raise UnsupportedError(f"deploy: {project_dir}: no bundle writer for protocol {hw.get('protocol')!r}")

    in_wire = WIRE[hw.get("input", {}).get("axi_word", "float")]
    out_wire = WIRE[hw.get("output", {}).get("axi_word", "float" if acc.output_type.float_exact(24) else "double")]
    bit, bitstream, dma_addr, address_source = _overlay(project_dir, out_dir, name, "hier_0_axi_dma_0",
                                                        (DEFAULT_DMA_ADDRESS[board.family], 0x10000))
    overlay_dir = out_dir / "overlay"
    if bit is None:
        bitstream.update(hwh=f"overlay/{name}.hwh",
                         hwh_source="generated by potatura from build_overlay.tcl's block design (emulated board)")
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

    _write_common(project_dir, out_dir, x, y, files)

    specific = {
        "dma": {"mode": "simple (no scatter-gather)", "length_width_bits": DMA_LENGTH_WIDTH,
                "max_transfer_bytes": (1 << DMA_LENGTH_WIDTH) - 1,
                "mm2s_data_width_bits": 8 * np.dtype(in_wire).itemsize,
                "s2mm_data_width_bits": 8 * np.dtype(out_wire).itemsize},
        "tensors": {"input": in_spec, "output": out_spec}}
    return _finish_manifest("axi-stream-dma", hw, board, acc, name, bitstream, ip, specific, len(x), provenance,
                            tolerance_codes, model_name, project_dir, hw_manifest_path, out_dir, files,
                            "simulated (potatura.sim)", "the simulator's design: what the emulated board runs",
                            {"numpy": np.__version__, "hls4ml": _version("hls4ml")})


def _write_common(project_dir: Path, out_dir: Path, x: np.ndarray, y: np.ndarray, files: list[str]) -> None:
    """What every bundle holds: golden.npz, the simulator's design (emulation/), the board-side package (agent/)."""
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


def _engine_spec(t, shape, layout: str, words: int, data_bits: int) -> dict:
    return {"shape": [int(d) for d in shape], "layout": layout, "type": t.to_dict(), "ap_type": t.ap(),
            "frac": int(t.frac), "min_code": int(t.min_code), "max_code": int(t.max_code),
            "encoding": f"integer codes of {t.ap()}: value = code * 2**-{t.frac}",
            "wire": {"dtype": f"int{data_bits}", "layout": "GHWC", "words": int(words),
                     "words_note": "the codes themselves, channels padded with zeros to groups of CPI (engine.npz "
                                   "input_index/output_index map words to elements)"}}


def _write_engine_bundle(hw: dict, board, acc, project_dir: Path, out_dir: Path, x, y, provenance: dict,
                         tolerance_codes: int, model_name, hw_manifest_path: Path) -> dict:
    """The bundle of a memory-mapped engine project (HLSinf-style): the calls, register map, packed weights."""
    from potatura.hwgen.hlsinf.planner import pack_activations, unpack_activations
    from potatura.sim.functional import run_layer

    name = hw.get("project_name", "hlsinf")
    engine_hw = hw["engine"]
    plan, cfg = acc.plan, acc.plan.engine
    bit, bitstream, address, address_source = _overlay(project_dir, out_dir, name, engine_hw["ip"],
                                                       (DEFAULT_ENGINE_ADDRESS[board.family], 0x10000))
    files = [f"overlay/{name}.bit", f"overlay/{name}.hwh"]

    # GHWC word <-> element maps, from the planner's packers (the one layout implementation)
    t_in, t_out = plan.tensors[plan.input], plan.tensors[plan.output]
    in_shape, out_shape = tuple(acc.input_shape), tuple(acc.output_shape)
    elements = np.arange(int(np.prod(in_shape)), dtype=np.int64).reshape(t_in.h, t_in.w, t_in.c)
    input_index = pack_activations(elements + 1, cfg.cpi) - 1  # -1: a padded channel word
    out_words = unpack_activations(np.arange(t_out.words(cfg.cpi), dtype=np.int64), t_out, cfg.cpi)
    out_layer = acc.graph.layer(acc.graph.output.layer)
    if out_layer.name != plan.output:  # the output is a view (FLATTEN) of the tensor in memory
        src = acc.graph.layer(out_layer.inputs[0])
        out_words = run_layer(out_layer, [out_words.reshape(1, *src.out_shape)], [src.result_type])
    output_index = np.asarray(out_words, dtype=np.int64).reshape(-1)
    arrays = {"input_index": input_index, "output_index": output_index}
    with np.load(project_dir / hw["weights"], allow_pickle=False) as data:
        for key in data.files:
            arrays[key] = np.asarray(data[key], dtype=np.int64)
    with atomic_path(out_dir / ENGINE_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    files.append(ENGINE_FILE)
    _write_common(project_dir, out_dir, x, y, files)

    timing = acc.call_timing()
    calls = [{"layer": c.layer, "frame": c.frame, "frames": c.frames, "input": c.input, "output": c.output,
              "add_input": c.add_input, "filters": c.filters, "args": [int(a) for a in c.args()],
              "cycles": int(t["cycles"]), "compute_cycles": int(t["compute_cycles"]),
              "memory_cycles": int(t["memory_cycles"]), "ddr_bytes": int(t["bytes"])}
             for c, t in zip(plan.calls, timing)]
    ip = {"engine": {"name": engine_hw["ip"], "vlnv": engine_hw["vlnv"], "phys_addr": address[0],
                     "addr_range": address[1], "address_source": address_source, "control": "ap_ctrl_hs",
                     "registers": engine_hw["registers"], "pointer_args": engine_hw["pointer_args"],
                     "call_args": engine_hw["call_args"], "m_axi": engine_hw["m_axi"]}}
    if bit is None:
        from potatura.deploy.hwh import write_hwh

        write_hwh(out_dir / "overlay" / f"{name}.hwh", board, name, ip)
        bitstream.update(hwh=f"overlay/{name}.hwh",
                         hwh_source="generated by potatura from build_overlay.tcl's block design (emulated board)")
    specific = {
        "engine": cfg.to_dict(), "engine_file": ENGINE_FILE,
        "buffers": {n: {"words": int(t.words(cfg.cpi)), "shape": [t.h, t.w, t.c]} for n, t in plan.tensors.items()},
        "input_buffer": plan.input, "output_buffer": plan.output, "calls": calls,
        "tensors": {"input": _engine_spec(acc.input_type, in_shape, "NHWC" if len(in_shape) == 3 else "flat",
                                          t_in.words(cfg.cpi), cfg.data_bits),
                    "output": _engine_spec(acc.output_type, out_shape, "NHWC" if len(out_shape) == 3 else "flat",
                                           t_out.words(cfg.cpi), cfg.data_bits)}}
    return _finish_manifest("memory-mapped-engine", hw, board, acc, name, bitstream, ip, specific, len(x), provenance,
                            tolerance_codes, model_name, project_dir, hw_manifest_path, out_dir, files,
                            "simulated (potatura.sim, the engine's call schedule)",
                            "the simulator's design: what the emulated board's engine computes",
                            {"numpy": np.__version__})


def _finish_manifest(protocol: str, hw: dict, board, acc, name: str, bitstream: dict, ip: dict, specific: dict,
                     samples: int, provenance: dict, tolerance_codes: int, model_name, project_dir: Path,
                     hw_manifest_path: Path, out_dir: Path, files: list[str], timing_source: str, emulation_note: str,
                     tools: dict) -> dict:
    """The manifest: the sections every bundle has around the protocol's own (`specific`), with the sha256
    of every file; written last, so a bundle with a manifest is complete."""
    cycles1, cycles_n = acc.cycles(1), acc.cycles(samples)
    manifest = {
        "format": bundles.BUNDLE_FORMAT, "driver_abi": bundles.DRIVER_ABIS[protocol], "potatura_version": __version__,
        "protocol": protocol,
        "model": model_name, "board": board.name, "platform": board.family, "part": board.part, "shell": board.shell,
        "pynq_images": list(board.pynq_images), "backend": hw.get("backend", "hls4ml"), "project_name": name,
        "clock_mhz": float(acc.clock_mhz), "bitstream": bitstream, "ip": ip, **specific,
        "tolerance": {"max_abs_code_difference": int(tolerance_codes),
                      "meaning": "0: bit-exact; otherwise the largest |code difference| accepted per element"},
        "golden": {"file": "golden.npz", **provenance},
        "timing": {"latency_cycles": int(cycles1.latency_cycles), "interval_cycles": int(cycles1.interval_cycles),
                   "min_deadline_s": 1.0, "source": timing_source},
        "sim": {"batch_1": cycles1.to_dict(), f"batch_{samples}": cycles_n.to_dict()},
        "emulation": {"dir": "emulation", "note": emulation_note},
        "hwgen": {"dir": str(project_dir), "manifest_sha256": file_sha256(hw_manifest_path)},
        "tools": tools,
    }
    manifest["files"] = {rel: bundles.sha256_file(out_dir / rel) for rel in files}
    write_json(out_dir / bundles.MANIFEST, manifest)
    return manifest


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None
