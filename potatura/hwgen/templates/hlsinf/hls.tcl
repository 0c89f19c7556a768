# potatura: Vivado/Vitis HLS script of the HLSinf-style engine for @@BOARD@@ (@@PART@@), `potatura hwgen`.
#   C synthesis at @@CLOCK_MHZ@@ MHz and IP export (Vivado IP catalog for Zynq; .xo for Alveo via the Makefile).
#   Run: vitis_hls -f hls.tcl   (or vivado_hls -f hls.tcl)
open_project -reset hlsinf_prj
set_top hlsinf_top
add_files src/hlsinf_top.cpp -cflags "-Isrc"
open_solution -reset solution1
set_part {@@PART@@}
create_clock -period [expr {1000.0 / @@CLOCK_MHZ@@}] -name default
csynth_design
export_design -format ip_catalog -rtl verilog
exit
