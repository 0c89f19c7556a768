# potatura: PYNQ overlay of the HLSinf-style engine for @@BOARD@@ (@@PART@@, @@FAMILY@@), `potatura hwgen`.
#   Zynq PS + the engine IP, whose four AXI masters (activations in, filters/biases, residual in,
#   activations out) reach DDR through the PS HP ports and whose AXI-Lite control sits on the PS general-purpose
#   master; PL clock @@CLOCK_MHZ@@ MHz; synthesis -> implementation -> bitstream, then the .bit and the
#   .hwh PYNQ needs (same basename) are copied to overlay/.
# Run after `vitis_hls -f hls.tcl`:  vivado -mode batch -source build_overlay.tcl
set part "@@PART@@"
set family "@@FAMILY@@"
set board_part "@@BOARD_PART@@"
set ps_vlnv "@@PS_VLNV@@"
set fclk_mhz @@CLOCK_MHZ@@
set overlay_name "hlsinf"
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
}
set_property ip_repo_paths [list [file normalize hlsinf_prj/solution1/impl/ip]] [current_project]
update_ip_catalog

create_bd_design "design_1"
set ps [create_bd_cell -type ip -vlnv [newest_ipdef $ps_vlnv] ps_0]
if {$family eq "zynq-7000"} {
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config [list make_external "FIXED_IO, DDR" apply_board_preset $use_preset Master "Disable" Slave "Disable"] $ps
    set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 {1} CONFIG.PCW_USE_S_AXI_HP1 {1} CONFIG.PCW_USE_S_AXI_HP2 {1} CONFIG.PCW_USE_S_AXI_HP3 {1} \
        CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $fclk_mhz] $ps
    set gp_master /ps_0/M_AXI_GP0
    set hp_slaves [list ps_0/S_AXI_HP0 ps_0/S_AXI_HP1 ps_0/S_AXI_HP2 ps_0/S_AXI_HP3]
} else {
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config [list apply_board_preset $use_preset] $ps
    # HPM1_FPD and HPM0_LPD (M_AXI_GP2) disabled: a preset may enable them, and an enabled master
    # whose clock is left unconnected fails validate_bd_design (as in the hls4ml overlay).
    set_property -dict [list CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} CONFIG.PSU__USE__S_AXI_GP3 {1} CONFIG.PSU__USE__S_AXI_GP4 {1} CONFIG.PSU__USE__S_AXI_GP5 {1} \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $fclk_mhz] $ps
    set gp_master /ps_0/M_AXI_HPM0_FPD
    set hp_slaves [list ps_0/S_AXI_HP0_FPD ps_0/S_AXI_HP1_FPD ps_0/S_AXI_HP2_FPD ps_0/S_AXI_HP3_FPD]
}

set engine [create_bd_cell -type ip -vlnv [newest_ipdef xilinx.com:hls:hlsinf_top] hlsinf_0]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} \
    Master $gp_master Slave /hlsinf_0/s_axi_control ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] \
    [get_bd_intf_pins hlsinf_0/s_axi_control]
# One HP port per engine memory port, as the fitter assigned them (fit_report.md).
foreach master {m_axi_gmem_in m_axi_gmem_weights m_axi_gmem_add m_axi_gmem_out} slave $hp_slaves {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} \
        Master /hlsinf_0/$master Slave /$slave ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] \
        [get_bd_intf_pins $slave]
}
assign_bd_address
validate_bd_design
save_bd_design

make_wrapper -files [get_files design_1.bd] -top
add_files -norecurse [glob overlay_prj/overlay.gen/sources_1/bd/design_1/hdl/design_1_wrapper.v overlay_prj/overlay.srcs/sources_1/bd/design_1/hdl/design_1_wrapper.v]
set_property top design_1_wrapper [current_fileset]
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
file mkdir overlay
file copy -force [glob overlay_prj/overlay.runs/impl_1/*.bit] overlay/${overlay_name}.bit
file copy -force [glob overlay_prj/overlay.gen/sources_1/bd/design_1/hw_handoff/design_1.hwh overlay_prj/overlay.srcs/sources_1/bd/design_1/hw_handoff/design_1.hwh] overlay/${overlay_name}.hwh
