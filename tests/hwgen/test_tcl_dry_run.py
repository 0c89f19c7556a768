"""Dry run of every generated build_overlay.tcl under tclsh with a mock of the Vivado commands
(tests/hwgen/data/vivado_mock.tcl): IP VLNVs against the IP catalog of each supported Vivado release
(tests/hwgen/data/vivado_ips.json, with sources), interface and pin names, enabled PS ports with
their clocks, DMA widths, and the address map; for every Zynq board of the catalog. Plus the build
files' other first-try defects (issue 11 items 1-5)."""

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from potatura.boards.catalog import get_board, load_catalog
from potatura.errors import ConfigError
from potatura.hwgen.hls4ml import convert
from potatura.hwgen.hls4ml.lowering import read_network
from potatura.hwgen.hls4ml.project import (
    UnsupportedToolError,
    fix_driver,
    run_build,
    vendor_tools,
    write_build_files,
)

DATA = Path(__file__).parent / "data"
IPS = json.loads((DATA / "vivado_ips.json").read_text())
ZYNQ = sorted(name for name, b in load_catalog().items() if b.is_zynq)
HLS_VLNV = "xilinx.com:hls:potatura_accel_axi:1.0"
pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh (Debian package tcl) not installed")


@pytest.fixture(scope="module")
def net(cnn_qonnx):
    return read_network(cnn_qonnx)


def dry_run(project: Path, version: str, board_files: bool, out_bits: int, edit=None) -> tuple[int, str]:
    """Run project/build_overlay.tcl under tclsh with the mock; (exit code, output)."""
    tcl = project / "build_overlay.tcl"
    if edit:
        tcl.write_text(edit(tcl.read_text()))
    impl = project / "overlay_prj" / "overlay.runs" / "impl_1"
    hwh = project / "overlay_prj" / "overlay.gen" / "sources_1" / "bd" / "design_1" / "hw_handoff"
    for folder, name in ((impl, "design_1_wrapper.bit"), (hwh, "design_1.hwh")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("mock")
    driver = project / "dry_run.tcl"
    driver.write_text("\n".join([
        f"set ::ip_catalog {{{' '.join(IPS['versions'][version])}}}",
        f"set ::board_files {int(board_files)}",
        f"set ::hls_vlnv {HLS_VLNV}",
        "set ::expect_in_bits 32",
        f"set ::expect_out_bits {out_bits}",
        f"source {{{DATA / 'vivado_mock.tcl'}}}",
        "if {[catch {source build_overlay.tcl} err]} { puts \"FAILED: $err\"; mock_report; exit 1 }",
        "mock_report",
    ]))
    proc = subprocess.run(["tclsh", str(driver)], cwd=project, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def render(net, board, tmp_path: Path) -> Path:
    project = tmp_path / board.name / "project"
    project.mkdir(parents=True)
    write_build_files(project, board, net)
    return project


@pytest.mark.parametrize("version", sorted(IPS["versions"]))
@pytest.mark.parametrize("board_name", ZYNQ)
def test_every_zynq_overlay_script_passes_the_mock(net, tmp_path, board_name, version):
    board = get_board(board_name)
    out_bits = 32 if convert.axi_output_type(net) == "float" else 64
    for board_files in (False, True):
        project = render(net, board, tmp_path / str(board_files))
        code, out = dry_run(project, version, board_files, out_bits)
        assert code == 0 and "MOCK validated 1" in out, out
        cells = dict(line.split()[2:4] for line in out.splitlines() if line.startswith("MOCK cell"))
        ps_vlnv = cells["ps_0"]
        assert ps_vlnv.startswith(board.ps_ip + ":") and ps_vlnv in IPS["versions"][version]
        assert cells["axi_dma_0"] == "xilinx.com:ip:axi_dma:7.1" and cells["potatura_accel_axi_0"] == HLS_VLNV
        hier = {line.split()[2]: line.split()[4] for line in out.splitlines() if line.startswith("MOCK cell")}
        assert hier["axi_dma_0"] == hier["potatura_accel_axi_0"] == "hier_0"  # PYNQ: overlay.hier_0.axi_dma_0
        # the address map: the PS control master reaches the DMA's registers, both DMA masters reach the DDR
        amap = {(m[2] + "/" + m[3], m[4] + "/" + m[5]): m[6] for m in (line.split() for line in out.splitlines()
                                                                       if line.startswith("MOCK address"))}
        control = "ps_0/M_AXI_GP0" if board.family == "zynq-7000" else "ps_0/M_AXI_HPM0_FPD"
        data = "ps_0/S_AXI_HP0" if board.family == "zynq-7000" else "ps_0/S_AXI_HPC0_FPD"
        assert amap[(control, "axi_dma_0/S_AXI_LITE")] == ("0x40400000" if board.family == "zynq-7000" else "0xA0000000")
        assert (("axi_dma_0/M_AXI_MM2S", data) in amap) and (("axi_dma_0/M_AXI_S2MM", data) in amap)
        assert len(amap) == 3
        assert (project / "overlay" / "potatura_accel.bit").is_file() and (project / "overlay" / "potatura_accel.hwh").is_file()


def test_the_mock_catches_the_defects_it_checks(net, tmp_path):
    """Each defect of issue 11 the dry run is for, put back: the mock fails, naming it."""
    # 1: a PS VLNV with a version (the old pynq catalog entry) matches nothing in the IP catalog
    old = dataclasses.replace(get_board("pynq-z2"), ps_ip="xilinx.com:ip:processing_system7:5.5")
    code, out = dry_run(render(net, old, tmp_path / "a"), "2020.1", False, 32)
    assert code == 1 and "IP xilinx.com:ip:processing_system7:5.5 is not in the IP catalog" in out
    # 3: UltraScale+ without board files and HPM0_LPD left enabled: its clock is unconnected
    zcu104 = get_board("zcu104")
    code, out = dry_run(render(net, zcu104, tmp_path / "b"), "2020.1", False, 32,
                        edit=lambda t: t.replace(" CONFIG.PSU__USE__M_AXI_GP2 {0}", ""))
    assert code == 1 and "ps_0/M_AXI_HPM0_LPD is enabled and its clock pin ps_0/maxihpm0_lpd_aclk" in out
    # the S2MM width must be the IP's output word (64 bits for double words)
    code, out = dry_run(render(net, zcu104, tmp_path / "c"), "2020.1", False, 64)
    assert code == 1 and "S2MM stream 32 bits, the IP writes 64" in out
    # an interface that does not exist
    code, out = dry_run(render(net, zcu104, tmp_path / "d"), "2020.1", True, 32,
                        edit=lambda t: t.replace("S_AXI_HPC0_FPD", "S_AXI_HPC9_FPD"))
    assert code == 1 and "has no interface S_AXI_HPC9_FPD" in out


def test_ps_ip_with_a_version_is_refused_by_the_catalog(tmp_path):
    from potatura.boards.catalog import CATALOG_DIR, parse_board

    text = (CATALOG_DIR / "pynq-z2.yaml").read_text().replace('"xilinx.com:ip:processing_system7"',
                                                               '"xilinx.com:ip:processing_system7:5.5"')
    (tmp_path / "pynq-z2.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"shell.ps_ip 'xilinx.com:ip:processing_system7:5.5': expected "
                                          r"vendor:library:name without a version"):
        parse_board(tmp_path / "pynq-z2.yaml")
    assert all(len(b.ps_ip.split(":")) == 3 for b in load_catalog().values() if b.is_zynq)


def test_vitis_hls_is_refused_by_name(net, tmp_path, monkeypatch):
    board = get_board("pynq-z2")
    monkeypatch.setenv("POTATURA_HLS", "/opt/Xilinx/Vitis_HLS/2023.1/bin/vitis_hls")
    with pytest.raises(UnsupportedToolError, match=r"is Vitis HLS .*build with Vivado HLS 2019.2 or 2020.1"):
        vendor_tools(board)
    project = render(net, board, tmp_path)
    outcome = run_build(project, board, tmp_path / "build.log")
    assert not outcome.ran and "Vitis HLS" in outcome.message and "Vivado HLS 2019.2 or 2020.1" in outcome.message
    build_md = (project / "BUILD.md").read_text()
    assert "Vivado HLS 2019.2 or 2020.1" in build_md and "Tested:" in build_md
    if shutil.which("make"):
        env = dict(os.environ, PATH=os.environ["PATH"])
        proc = subprocess.run(["make", "-n", "ip", "HLS=vitis_hls"], cwd=project, capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode != 0 and "Vitis HLS loses TLAST" in proc.stderr


@pytest.mark.parametrize("template_board", ["pynq-z2", "zcu102"])
def test_driver_buffers_get_each_directions_dtype(tmp_path, template_board):
    """The PYNQ driver of hls4ml 1.3 allocates both buffers with one dtype: the output gets its own."""
    import hls4ml

    template = (Path(hls4ml.__file__).parent / "templates" / "vivado_accelerator" / template_board / "python_drivers"
                / "axi_stream_driver.py")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(template, project / "axi_stream_driver.py")

    class Wide:  # an output type over 24 bits: double words out
        class output_type:
            @staticmethod
            def float_exact(bits):
                return False

    fix_driver(project, Wide, get_board("pynq-z2"))
    text = (project / "axi_stream_driver.py").read_text()
    assert "out_dtype=np.float64" in text and "allocate(shape=y_shape, dtype=out_dtype)" in text
    assert "self.input_buffer = allocate(shape=x_shape, dtype=dtype)" in text
    compile(text, "axi_stream_driver.py", "exec")
