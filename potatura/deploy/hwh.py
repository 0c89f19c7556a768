"""The .hwh (Vivado hardware handoff) that build_overlay.tcl's block design would produce, for the emulated board.

Only what PYNQ's parser reads: the processing system (its PL clock parameters and the register
window it maps for the DMA), and hier_0/axi_dma_0 (VLNV axi_dma:7.1 with the lowercase parameters
the Tcl sets and its address window). The hls4ml IP is ap_ctrl_none (no AXI-lite), so no address.
A real build replaces this file with Vivado's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from potatura.artifacts import write_text

PS = {
    "zynq-7000": {"vlnv": "xilinx.com:ip:processing_system7:5.5", "modtype": "processing_system7", "arch": "zynq",
                  "instance": "ps_0", "master": "M_AXI_GP0",
                  "clock_params": lambda mhz: {"PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{mhz:g}",
                                               "PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ": f"{mhz:.6f}",
                                               "PCW_FCLK0_PERIPHERAL_DIVISOR0": "5", "PCW_FCLK0_PERIPHERAL_DIVISOR1": "2",
                                               "PCW_FCLK_CLK0_BUF": "TRUE", "PCW_USE_S_AXI_HP0": "1"}},
    "zynq-ultrascale+": {"vlnv": "xilinx.com:ip:zynq_ultra_ps_e:3.3", "modtype": "zynq_ultra_ps_e",
                         "arch": "zynquplus", "instance": "ps_0", "master": "M_AXI_HPM0_FPD",
                         "clock_params": lambda mhz: {"PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{mhz:g}",
                                                      "PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ": f"{mhz:.6f}",
                                                      "PSU__CRL_APB__PL0_REF_CTRL__DIVISOR0": "15",
                                                      "PSU__CRL_APB__PL0_REF_CTRL__DIVISOR1": "1",
                                                      "PSU__FPGA_PL0_ENABLE": "1"}},
}


def hwh_xml(board, project_name: str, ip: dict, in_bits: int = 32, out_bits: int = 32) -> str:
    ps = PS[board.family]
    dma = ip["dma"]
    base, size = int(dma["phys_addr"]), int(dma["addr_range"])
    dma_instance = dma["name"].replace("/", "_")
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

    ps_module = module("/" + ps["instance"], ps["vlnv"], ps["modtype"], ps["clock_params"](board.clock_mhz),
                       "PROCESSOR")
    memmap = ET.SubElement(ps_module, "MEMORYMAP")
    ET.SubElement(memmap, "MEMRANGE", ADDRESSBLOCK="Reg", BASENAME="C_BASEADDR", BASEVALUE=f"0x{base:08X}",
                  HIGHNAME="C_HIGHADDR", HIGHVALUE=f"0x{base + size - 1:08X}", INSTANCE=dma_instance,
                  IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=ps["master"], MEMTYPE="REGISTER",
                  SLAVEBUSINTERFACE="S_AXI_LITE")
    ET.SubElement(ps_module, "PORTS")
    ET.SubElement(ps_module, "BUSINTERFACES")
    dma_module = module("/" + dma["name"], dma["vlnv"], "axi_dma", {
        "c_include_sg": 0, "c_sg_length_width": 26, "c_sg_include_stscntrl_strm": 0,
        "c_include_mm2s": 1, "c_include_s2mm": 1, "c_micro_dma": 0,
        "c_m_axi_mm2s_data_width": in_bits, "c_m_axis_mm2s_tdata_width": in_bits, "c_mm2s_burst_size": 256,
        "c_m_axi_s2mm_data_width": out_bits, "c_s_axis_s2mm_tdata_width": out_bits, "c_s2mm_burst_size": 256,
        "c_addr_width": 32, "C_BASEADDR": f"0x{base:08X}", "C_HIGHADDR": f"0x{base + size - 1:08X}"})
    ET.SubElement(dma_module, "PORTS")
    ET.SubElement(dma_module, "BUSINTERFACES")
    accel = ip["accelerator"]
    accel_module = module("/" + accel["name"], accel["vlnv"], f"{project_name}_axi", {})
    ET.SubElement(accel_module, "PORTS")
    ET.SubElement(accel_module, "BUSINTERFACES")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_hwh(path, board, project_name: str, ip: dict, in_bits: int = 32, out_bits: int = 32) -> Path:
    return write_text(path, hwh_xml(board, project_name, ip, in_bits, out_bits))
