"""The .hwh (Vivado hardware handoff) that build_overlay.tcl's block design would produce, for the emulated board.

Only what PYNQ's parser reads: the processing system (its PL clock parameters and the register
window it maps for the DMA), and hier_0/axi_dma_0 (VLNV axi_dma:7.1 with the lowercase parameters
the Tcl sets and its address window). The hls4ml IP is ap_ctrl_none (no AXI-lite), so no address.
For a memory-mapped engine (HLSinf-style): the engine (hlsinf_0) with its s_axi_control window and
its m_axi masters, no DMA.
A real build replaces this file with Vivado's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from potatura.artifacts import write_text

def _zynq7000_clocks(mhz: float) -> dict:
    """PCW clock parameters of the four PL clocks: FCLK0 at `mhz` from the 1000 MHz IO PLL, the rest off."""
    params = {"PCW_USE_S_AXI_HP0": "1", "PCW_USE_M_AXI_GP0": "1"}
    for n in range(4):
        on = n == 0
        div = max(1, round(1000.0 / mhz))
        div0, div1 = next(((a, div // a) for a in range(min(div, 63), 0, -1) if div % a == 0 and div // a < 64),
                          (div, 1))
        params.update({f"PCW_FPGA_FCLK{n}_ENABLE": "1" if on else "0", f"PCW_FCLK{n}_PERIPHERAL_CLKSRC": "IO PLL",
                       f"PCW_FCLK{n}_PERIPHERAL_DIVISOR0": str(div0 if on else 1),
                       f"PCW_FCLK{n}_PERIPHERAL_DIVISOR1": str(div1 if on else 1),
                       f"PCW_FPGA{n}_PERIPHERAL_FREQMHZ": f"{mhz:g}" if on else "10",
                       f"PCW_ACT_FPGA{n}_PERIPHERAL_FREQMHZ": f"{1000.0 / (div0 * div1):.6f}" if on else "10.000000"})
    return params


def _zynqmp_clocks(mhz: float) -> dict:
    params = {}
    for n in range(4):
        on = n == 0
        div = max(1, round(1500.0 / mhz))
        params.update({f"PSU__FPGA_PL{n}_ENABLE": "1" if on else "0", f"PSU__CRL_APB__PL{n}_REF_CTRL__SRCSEL": "IOPLL",
                       f"PSU__CRL_APB__PL{n}_REF_CTRL__DIVISOR0": str(div if on else 1),
                       f"PSU__CRL_APB__PL{n}_REF_CTRL__DIVISOR1": "1",
                       f"PSU__CRL_APB__PL{n}_REF_CTRL__FREQMHZ": f"{mhz:g}" if on else "100",
                       f"PSU__CRL_APB__PL{n}_REF_CTRL__ACT_FREQMHZ": f"{1500.0 / div:.6f}" if on else "100.000000"})
    return params


PS = {
    "zynq-7000": {"vlnv": "xilinx.com:ip:processing_system7:5.5", "modtype": "processing_system7", "arch": "zynq",
                  "instance": "ps_0", "master": "M_AXI_GP0", "slave": "S_AXI_HP0", "clock_params": _zynq7000_clocks},
    "zynq-ultrascale+": {"vlnv": "xilinx.com:ip:zynq_ultra_ps_e:3.3", "modtype": "zynq_ultra_ps_e",
                         "arch": "zynquplus", "instance": "ps_0", "master": "M_AXI_HPM0_FPD", "slave": "S_AXI_HPC0_FPD",
                         "clock_params": _zynqmp_clocks},
}


def hwh_xml(board, project_name: str, ip: dict, in_bits: int = 32, out_bits: int = 32) -> str:
    """The .hwh of a bundle's block design: the AXI DMA + AXI-stream accelerator (ip "dma", "accelerator"),
    or the memory-mapped engine (ip "engine": its s_axi_control window and m_axi masters)."""
    ps = PS[board.family]
    root = ET.Element("EDKSYSTEM", EDWVERSION="1.2", TIMESTAMP="potatura", VIVADOVERSION="2020.1")
    part = board.part
    ET.SubElement(root, "SYSTEMINFO", ARCH=ps["arch"], BOARD=board.board_part or "", DEVICE=part,
                  NAME="design_1", PACKAGE="", SPEEDGRADE="")
    ET.SubElement(root, "EXTERNALPORTS")
    modules = ET.SubElement(root, "MODULES")

    def module(fullname: str, vlnv: str, modtype: str, params: dict, modclass: str = "PERIPHERAL"):
        instance = fullname.strip("/").replace("/", "_")
        m = ET.SubElement(modules, "MODULE", FULLNAME=fullname, HWVERSION=vlnv.rsplit(":", 1)[1],
                          INSTANCE=instance, IPTYPE="PERIPHERAL", IS_ENABLE="1", MODCLASS=modclass,
                          MODTYPE=modtype, VLNV=vlnv)
        p = ET.SubElement(m, "PARAMETERS")
        for key, value in params.items():
            ET.SubElement(p, "PARAMETER", NAME=key, VALUE=str(value))
        return m

    def bus(parent, *interfaces):
        """Bus interfaces without port maps: the names, directions and kinds PYNQ's parser keys on."""
        b = ET.SubElement(parent, "BUSINTERFACES")
        for name, kind, iface in interfaces:
            ET.SubElement(b, "BUSINTERFACE", BUSNAME=f"{parent.get('INSTANCE')}_{name}", NAME=name, TYPE=kind,
                          VLNV=f"xilinx.com:interface:{iface}:1.0")

    slave_ip = ip["engine"] if "engine" in ip else ip["dma"]
    base, size = int(slave_ip["phys_addr"]), int(slave_ip["addr_range"])
    ps_module = module("/" + ps["instance"], ps["vlnv"], ps["modtype"], ps["clock_params"](board.clock_mhz),
                       "PROCESSOR")
    memmap = ET.SubElement(ps_module, "MEMORYMAP")
    ET.SubElement(memmap, "MEMRANGE", ADDRESSBLOCK="Reg", BASENAME="C_BASEADDR", BASEVALUE=f"0x{base:08X}",
                  HIGHNAME="C_HIGHADDR", HIGHVALUE=f"0x{base + size - 1:08X}",
                  INSTANCE=slave_ip["name"].replace("/", "_"), IS_DATA="TRUE", IS_INSTRUCTION="TRUE",
                  MASTERBUSINTERFACE=ps["master"], MEMTYPE="REGISTER",
                  SLAVEBUSINTERFACE="s_axi_control" if "engine" in ip else "S_AXI_LITE")
    ET.SubElement(ps_module, "PORTS")
    bus(ps_module, (ps["master"], "MASTER", "aximm"), (ps["slave"], "SLAVE", "aximm"))
    if "engine" in ip:
        engine = ip["engine"]
        vlnv = engine["vlnv"]
        engine_module = module("/" + engine["name"], vlnv, vlnv.split(":")[2], {
            "C_S_AXI_CONTROL_BASEADDR": f"0x{base:08X}", "C_S_AXI_CONTROL_HIGHADDR": f"0x{base + size - 1:08X}"})
        ET.SubElement(engine_module, "PORTS")
        masters = sorted({m["bundle"] for m in engine["m_axi"].values()})
        bus(engine_module, ("s_axi_control", "SLAVE", "aximm"), *((f"m_axi_{b}", "MASTER", "aximm") for b in masters))
    else:
        dma = ip["dma"]
        dma_module = module("/" + dma["name"], dma["vlnv"], "axi_dma", {
            "c_include_sg": 0, "c_sg_length_width": 26, "c_sg_include_stscntrl_strm": 0,
            "c_include_mm2s": 1, "c_include_s2mm": 1, "c_micro_dma": 0,
            "c_m_axi_mm2s_data_width": in_bits, "c_m_axis_mm2s_tdata_width": in_bits, "c_mm2s_burst_size": 256,
            "c_m_axi_s2mm_data_width": out_bits, "c_s_axis_s2mm_tdata_width": out_bits, "c_s2mm_burst_size": 256,
            "c_addr_width": 32, "C_BASEADDR": f"0x{base:08X}", "C_HIGHADDR": f"0x{base + size - 1:08X}"})
        ET.SubElement(dma_module, "PORTS")
        bus(dma_module, ("S_AXI_LITE", "SLAVE", "aximm"), ("M_AXI_MM2S", "MASTER", "aximm"),
            ("M_AXI_S2MM", "MASTER", "aximm"), ("M_AXIS_MM2S", "INITIATOR", "axis"),
            ("S_AXIS_S2MM", "TARGET", "axis"))
        accel = ip["accelerator"]
        accel_module = module("/" + accel["name"], accel["vlnv"], f"{project_name}_axi", {})
        ET.SubElement(accel_module, "PORTS")
        bus(accel_module, ("in_r", "TARGET", "axis"), ("out_r", "INITIATOR", "axis"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_hwh(path, board, project_name: str, ip: dict, in_bits: int = 32, out_bits: int = 32) -> Path:
    return write_text(path, hwh_xml(board, project_name, ip, in_bits, out_bits))
