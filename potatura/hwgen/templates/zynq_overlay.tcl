# potatura: PYNQ overlay for @@BOARD@@ (@@PART@@, @@FAMILY@@), written by `potatura hwgen`.
#   Zynq PS + AXI DMA (simple mode, no scatter-gather) + the hls4ml IP (AXI-stream in/out),
#   PL clock @@CLOCK_MHZ@@ MHz, synthesis -> implementation -> bitstream, then the .bit and the .hwh
#   PYNQ needs (same basename) are copied to overlay/.
# Run after the HLS IP export (see Makefile):  vivado -mode batch -source build_overlay.tcl
# IP versions are looked up in the installed Vivado, so the script is not tied to one release.

set project_name "@@PROJECT@@"
set part "@@PART@@"
set family "@@FAMILY@@"
set board_part "@@BOARD_PART@@"
set ps_vlnv "@@PS_VLNV@@"
set fclk_mhz @@CLOCK_MHZ@@
set in_bits @@IN_BITS@@
set out_bits @@OUT_BITS@@
set overlay_name "@@OVERLAY@@"
set jobs 4
if {[info exists ::env(POTATURA_JOBS)]} { set jobs $::env(POTATURA_JOBS) }

proc newest_ipdef {vlnv} {
    set defs [lsort -dictionary [get_ipdefs -all "${vlnv}:*"]]
    if {[llength $defs] == 0} { error "potatura: IP $vlnv is not in the IP catalog" }
    return [lindex $defs end]
}

create_project overlay overlay_prj -part $part -force
set use_preset 0
if {$board_part ne "" && [llength [get_board_parts -quiet $board_part]] > 0} {
    set_property board_part $board_part [current_project]
    set use_preset 1
} else {
    puts "potatura: board files for '$board_part' are not installed: bare part, PS defaults (PYNQ's boot image configures DDR and MIO)"
}
set_property ip_repo_paths [list [file normalize ${project_name}_prj/solution1/impl/ip]] [current_project]
update_ip_catalog

create_bd_design "design_1"
set ps [create_bd_cell -type ip -vlnv [newest_ipdef $ps_vlnv] ps_0]
if {$family eq "zynq-7000"} {
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config [list make_external "FIXED_IO, DDR" apply_board_preset $use_preset Master "Disable" Slave "Disable"] $ps
    set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 {1} CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $fclk_mhz] $ps
    set clk_pin ps_0/FCLK_CLK0
    set gp_master /ps_0/M_AXI_GP0
    set hp_slave ps_0/S_AXI_HP0
} else {
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config [list apply_board_preset $use_preset] $ps
    # Only HPM0_FPD (control) and HPC0 (DMA data) are used: HPM1_FPD and HPM0_LPD (M_AXI_GP2) are
    # disabled, since a board preset or the PS defaults may enable them and an enabled master whose
    # clock pin is left unconnected fails validate_bd_design.
    set_property -dict [list CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP0 {1} CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $fclk_mhz] $ps
    set clk_pin ps_0/pl_clk0
    set gp_master /ps_0/M_AXI_HPM0_FPD
    set hp_slave ps_0/S_AXI_HPC0_FPD
}

# AXI DMA in simple mode: the PYNQ driver uses sendchannel/recvchannel.transfer and wait().
set dma [create_bd_cell -type ip -vlnv [newest_ipdef xilinx.com:ip:axi_dma] axi_dma_0]
set_property -dict [list CONFIG.c_s_axis_s2mm_tdata_width.VALUE_SRC USER CONFIG.c_m_axi_s2mm_data_width.VALUE_SRC USER] $dma
set_property -dict [list CONFIG.c_include_sg {0} CONFIG.c_sg_length_width {26} CONFIG.c_sg_include_stscntrl_strm {0} \
    CONFIG.c_m_axi_mm2s_data_width $in_bits CONFIG.c_m_axis_mm2s_tdata_width $in_bits CONFIG.c_mm2s_burst_size {256} \
    CONFIG.c_m_axi_s2mm_data_width $out_bits CONFIG.c_s_axis_s2mm_tdata_width $out_bits CONFIG.c_s2mm_burst_size {256}] $dma

set accel [create_bd_cell -type ip -vlnv xilinx.com:hls:${project_name}_axi:1.0 ${project_name}_axi_0]

apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} \
    Master $gp_master Slave /axi_dma_0/S_AXI_LITE ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] \
    [get_bd_intf_pins axi_dma_0/S_AXI_LITE]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} \
    Master /axi_dma_0/M_AXI_MM2S Slave /$hp_slave ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] \
    [get_bd_intf_pins $hp_slave]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} \
    Master /axi_dma_0/M_AXI_S2MM Slave /$hp_slave ddr_seg {Auto} intc_ip {Auto} master_apm {0}] \
    [get_bd_intf_pins axi_dma_0/M_AXI_S2MM]

connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXIS_MM2S] [get_bd_intf_pins ${project_name}_axi_0/in_r]
connect_bd_intf_net [get_bd_intf_pins ${project_name}_axi_0/out_r] [get_bd_intf_pins axi_dma_0/S_AXIS_S2MM]
# The accelerator runs on the PS clock that drives the DMA, reset by the same processor reset block.
connect_bd_net [get_bd_pins $clk_pin] [get_bd_pins ${project_name}_axi_0/ap_clk]
set resets [get_bd_pins -of_objects [get_bd_cells -filter {VLNV =~ "*proc_sys_reset*"}] -filter {NAME == peripheral_aresetn}]
connect_bd_net [lindex $resets 0] [get_bd_pins ${project_name}_axi_0/ap_rst_n]

# PYNQ's generated driver finds the DMA as overlay.hier_0.axi_dma_0.
group_bd_cells hier_0 [get_bd_cells axi_dma_0] [get_bd_cells ${project_name}_axi_0]
assign_bd_address
validate_bd_design
save_bd_design

set bd_file [get_files design_1.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top design_1_wrapper [current_fileset]

launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "potatura: implementation did not finish; see overlay_prj/overlay.runs/impl_1/runme.log"
}

open_run impl_1
file mkdir reports overlay
report_utilization -file reports/utilization.rpt
report_utilization -hierarchical -file reports/utilization_hierarchical.rpt
report_timing_summary -file reports/timing_summary.rpt

set bits [glob -nocomplain overlay_prj/overlay.runs/impl_1/*.bit]
if {[llength $bits] == 0} { error "potatura: no bitstream in overlay_prj/overlay.runs/impl_1" }
file copy -force [lindex $bits 0] overlay/${overlay_name}.bit
# Vivado 2020.2+ puts generated files under .gen, older releases under .srcs.
set hwhs [concat [glob -nocomplain overlay_prj/overlay.gen/sources_1/bd/design_1/hw_handoff/design_1.hwh] \
                 [glob -nocomplain overlay_prj/overlay.srcs/sources_1/bd/design_1/hw_handoff/design_1.hwh]]
if {[llength $hwhs] == 0} { error "potatura: design_1.hwh not found" }
file copy -force [lindex $hwhs 0] overlay/${overlay_name}.hwh
puts "potatura: overlay/${overlay_name}.bit and overlay/${overlay_name}.hwh written"
