# A mock of the Vivado Tcl commands potatura's build_overlay.tcl calls, for tclsh (no vendor tool).
# Set before sourcing: ::ip_catalog (VLNVs with version), ::board_files (0/1: the board part is
# installed), ::hls_vlnv (the hls4ml IP), ::expect_in_bits, ::expect_out_bits.
# It models what makes a block design fail: IPs missing from the catalog, interface/pin names that
# do not exist (or exist only when a PS port is enabled), enabled PS AXI ports whose clock pin is
# left unconnected (validate_bd_design), DMA stream widths, and the address map of assign_bd_address.
# Every command prints nothing; the result is printed as "MOCK ..." lines at exit (mock_report).

set ::cells [dict create]       ;# cell -> vlnv
set ::config [dict create]      ;# cell -> {CONFIG.x value ...}
set ::connected [dict create]   ;# pin path -> 1
set ::intf_nets {}
set ::segments {}
set ::hier [dict create]        ;# cell -> hierarchy
set ::addresses {}
set ::validated 0

proc mock_fail {msg} { error "mock vivado: $msg" }
proc ipname {vlnv} { return [lindex [split $vlnv :] 2] }
proc strip {path} { return [string trimleft $path /] }
proc cfg {cell key default} {
    if {[dict exists $::config $cell $key]} { return [dict get $::config $cell $key] }
    return $default
}

# Interface pins of each IP: {pin {enable-config default clock-pin}}.
proc intf_pins {cell} {
    set vlnv [dict get $::cells $cell]
    switch -- [ipname $vlnv] {
        processing_system7 { return [dict create \
            M_AXI_GP0 {CONFIG.PCW_USE_M_AXI_GP0 1 M_AXI_GP0_ACLK} \
            S_AXI_HP0 {CONFIG.PCW_USE_S_AXI_HP0 0 S_AXI_HP0_ACLK} \
            FIXED_IO {{} 1 {}} DDR {{} 1 {}}] }
        zynq_ultra_ps_e { return [dict create \
            M_AXI_HPM0_FPD {CONFIG.PSU__USE__M_AXI_GP0 1 maxihpm0_fpd_aclk} \
            M_AXI_HPM1_FPD {CONFIG.PSU__USE__M_AXI_GP1 1 maxihpm1_fpd_aclk} \
            M_AXI_HPM0_LPD {CONFIG.PSU__USE__M_AXI_GP2 1 maxihpm0_lpd_aclk} \
            S_AXI_HPC0_FPD {CONFIG.PSU__USE__S_AXI_GP0 0 saxihpc0_fpd_aclk}] }
        axi_dma { return [dict create S_AXI_LITE {{} 1 s_axi_lite_aclk} M_AXI_MM2S {{} 1 m_axi_mm2s_aclk} \
            M_AXI_S2MM {{} 1 m_axi_s2mm_aclk} M_AXIS_MM2S {{} 1 {}} S_AXIS_S2MM {{} 1 {}}] }
        default {
            if {$vlnv eq $::hls_vlnv} { return [dict create in_r {{} 1 {}} out_r {{} 1 {}}] }
            return [dict create]
        }
    }
}

proc plain_pins {cell} {
    set vlnv [dict get $::cells $cell]
    switch -- [ipname $vlnv] {
        processing_system7 { return {FCLK_CLK0 FCLK_RESET0_N M_AXI_GP0_ACLK S_AXI_HP0_ACLK} }
        zynq_ultra_ps_e { return {pl_clk0 pl_resetn0 maxihpm0_fpd_aclk maxihpm1_fpd_aclk maxihpm0_lpd_aclk saxihpc0_fpd_aclk} }
        axi_dma { return {s_axi_lite_aclk m_axi_mm2s_aclk m_axi_s2mm_aclk axi_resetn} }
        proc_sys_reset { return {slowest_sync_clk ext_reset_in peripheral_aresetn interconnect_aresetn} }
        default {
            if {$vlnv eq $::hls_vlnv} { return {ap_clk ap_rst_n} }
            return {}
        }
    }
}

proc port_enabled {cell pin} {
    set spec [dict get [intf_pins $cell] $pin]
    lassign $spec key default clock
    if {$key eq ""} { return 1 }
    return [expr {[cfg $cell $key $default] == 1}]
}

proc check_intf {path} {
    set path [strip $path]
    lassign [split $path /] cell pin
    if {![dict exists $::cells $cell]} { mock_fail "get_bd_intf_pins $path: no cell $cell" }
    if {![dict exists [intf_pins $cell] $pin]} {
        mock_fail "get_bd_intf_pins $path: [dict get $::cells $cell] has no interface $pin; it has [dict keys [intf_pins $cell]]"
    }
    if {![port_enabled $cell $pin]} { mock_fail "get_bd_intf_pins $path: interface $pin is disabled in $cell's configuration" }
    return $path
}

proc check_pin {path} {
    set path [strip $path]
    lassign [split $path /] cell pin
    if {![dict exists $::cells $cell]} { mock_fail "get_bd_pins $path: no cell $cell" }
    if {[lsearch -exact [plain_pins $cell] $pin] < 0} {
        mock_fail "get_bd_pins $path: [dict get $::cells $cell] has no pin $pin; it has [plain_pins $cell]"
    }
    return $path
}

proc add_cell {vlnv name} {
    if {[lsearch -exact $::ip_catalog $vlnv] < 0 && $vlnv ne $::hls_vlnv} {
        mock_fail "create_bd_cell: $vlnv is not in the IP catalog"
    }
    dict set ::cells $name $vlnv
    return $name
}

proc newest {pattern} {
    set defs [lsort -dictionary [get_ipdefs -all $pattern]]
    if {[llength $defs] == 0} { mock_fail "Vivado automation needs $pattern, not in the IP catalog" }
    return [lindex $defs end]
}

# --- project and catalog ---
proc create_project {args} {}
proc get_board_parts {args} { if {$::board_files} { return [lindex $args end] }; return {} }
proc current_project {args} { return project_1 }
proc current_fileset {args} { return sources_1 }
proc update_ip_catalog {args} {}
proc get_ipdefs {args} {
    set pattern [lindex $args end]
    set out {}
    foreach v $::ip_catalog { if {[string match $pattern $v]} { lappend out $v } }
    return $out
}

# --- block design ---
proc create_bd_design {args} {}
proc create_bd_cell {args} {
    set i [lsearch -exact $args -vlnv]
    if {$i < 0} { mock_fail "create_bd_cell without -vlnv" }
    return [add_cell [lindex $args [expr {$i + 1}]] [lindex $args end]]
}
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        set cell [strip [lindex $args end]]
        foreach {k v} [lindex $args 1] {
            if {![string match CONFIG.* $k]} { mock_fail "set_property -dict: $k is not a CONFIG parameter" }
            if {[dict exists $::cells $cell]} { dict set ::config $cell $k $v }
        }
    }
}
proc get_property {name obj} { if {$name eq "PROGRESS"} { return "100%" }; return "" }
proc get_bd_intf_pins {args} { return [check_intf [lindex $args end]] }
proc get_bd_pins {args} {
    set i [lsearch -exact $args -of_objects]
    if {$i >= 0} {
        set cells [lindex $args [expr {$i + 1}]]
        set f [lsearch -exact $args -filter]
        regexp {NAME == (\S+)} [lindex $args [expr {$f + 1}]] -> name
        set out {}
        foreach c $cells { if {[lsearch -exact [plain_pins $c] $name] >= 0} { lappend out "$c/$name" } }
        return $out
    }
    return [check_pin [lindex $args end]]
}
proc get_bd_cells {args} {
    set f [lsearch -exact $args -filter]
    if {$f >= 0} {
        regexp {VLNV =~ "([^"]+)"} [lindex $args [expr {$f + 1}]] -> pattern
        set out {}
        dict for {c v} $::cells { if {[string match $pattern $v]} { lappend out $c } }
        return $out
    }
    set name [strip [lindex $args end]]
    if {![dict exists $::cells $name]} { mock_fail "get_bd_cells $name: no such cell" }
    return $name
}
proc apply_bd_automation {args} {
    set rule [lindex $args [expr {[lsearch -exact $args -rule] + 1}]]
    set config [lindex $args [expr {[lsearch -exact $args -config] + 1}]]
    set target [lindex $args end]
    switch -- $rule {
        xilinx.com:bd_rule:processing_system7 - xilinx.com:bd_rule:zynq_ultra_ps_e {
            if {![dict exists $::cells [strip $target]]} { mock_fail "apply_bd_automation $rule: no cell $target" }
        }
        xilinx.com:bd_rule:axi4 {
            set master [check_intf [dict get $config Master]]
            set slave [check_intf [dict get $config Slave]]
            # Vivado's automation adds a reset block and an interconnect (IPs that must be in the catalog)
            # and drives every AXI clock of both ends from the PS clock.
            if {[llength [get_bd_cells -filter {VLNV =~ "*proc_sys_reset*"}]] == 0} {
                add_cell [newest xilinx.com:ip:proc_sys_reset:*] rst_ps_0
            }
            set intc [dict get $config intc_ip]
            if {$intc eq "New AXI Interconnect"} {
                add_cell [newest xilinx.com:ip:axi_interconnect:*] axi_interconnect_[llength $::segments]
            } elseif {$intc eq "Auto" || $intc eq "New AXI SmartConnect"} {
                add_cell [newest xilinx.com:ip:smartconnect:*] axi_smc_[llength $::segments]
            }
            foreach end [list $master $slave] {
                lassign [split $end /] cell pin
                set clock [lindex [dict get [intf_pins $cell] $pin] 2]
                if {$clock ne ""} { dict set ::connected "$cell/$clock" 1 }
            }
            lappend ::segments [list $master $slave]
        }
        default { mock_fail "apply_bd_automation: unknown rule $rule" }
    }
}
proc connect_bd_intf_net {a b} { lappend ::intf_nets [list $a $b] }
proc connect_bd_net {args} { foreach p $args { if {$p ne ""} { dict set ::connected [strip $p] 1 } } }
proc group_bd_cells {name args} { foreach c $args { dict set ::hier $c $name } }
proc assign_bd_address {args} {
    # The apertures PYNQ reads from the .hwh: a PS master reaches the DMA's registers in the PL window
    # of that master; the DMA's masters reach the PS DDR through the HP/HPC port.
    foreach seg $::segments {
        lassign $seg master slave
        lassign [split $master /] mcell mpin
        lassign [split $slave /] scell spin
        switch -- $mpin {
            M_AXI_GP0 { set base 0x40400000; set range 64K }
            M_AXI_HPM0_FPD { set base 0xA0000000; set range 64K }
            default { set base 0x00000000; set range DDR }
        }
        lappend ::addresses [list $mcell $mpin $scell $spin $base $range]
    }
}
proc validate_bd_design {args} {
    dict for {cell vlnv} $::cells {
        dict for {pin spec} [intf_pins $cell] {
            lassign $spec key default clock
            if {$clock ne "" && [port_enabled $cell $pin] && ![dict exists $::connected "$cell/$clock"]} {
                mock_fail "validate_bd_design: $cell/$pin is enabled and its clock pin $cell/$clock is not connected"
            }
        }
    }
    set accel [lindex [dict keys [dict filter $::cells value $::hls_vlnv]] 0]
    foreach pin {ap_clk ap_rst_n} {
        if {![dict exists $::connected "$accel/$pin"]} { mock_fail "validate_bd_design: $accel/$pin is not connected" }
    }
    foreach want [list [list axi_dma_0/M_AXIS_MM2S $accel/in_r] [list $accel/out_r axi_dma_0/S_AXIS_S2MM]] {
        if {[lsearch -exact $::intf_nets $want] < 0} { mock_fail "validate_bd_design: no stream [join $want { -> }]" }
    }
    set in_w [cfg axi_dma_0 CONFIG.c_m_axis_mm2s_tdata_width 32]
    set out_w [cfg axi_dma_0 CONFIG.c_s_axis_s2mm_tdata_width 32]
    if {$in_w != $::expect_in_bits} { mock_fail "validate_bd_design: MM2S stream $in_w bits, the IP reads $::expect_in_bits" }
    if {$out_w != $::expect_out_bits} { mock_fail "validate_bd_design: S2MM stream $out_w bits, the IP writes $::expect_out_bits" }
    if {[cfg axi_dma_0 CONFIG.c_include_sg 1] != 0} { mock_fail "validate_bd_design: the DMA has scatter-gather on" }
    set ::validated 1
}
proc save_bd_design {args} {}
proc get_files {args} { return design_1.bd }
proc generate_target {args} {}
proc make_wrapper {args} { return design_1_wrapper.v }
proc add_files {args} {}
proc launch_runs {args} {}
proc wait_on_run {args} {}
proc get_runs {args} { return impl_1 }
proc open_run {args} {}
proc report_utilization {args} { close [open [lindex $args end] w] }
proc report_timing_summary {args} { close [open [lindex $args end] w] }

proc mock_report {} {
    dict for {c v} $::cells { puts "MOCK cell $c $v [expr {[dict exists $::hier $c] ? [dict get $::hier $c] : {-}}]" }
    foreach a $::addresses { puts "MOCK address [join $a { }]" }
    puts "MOCK validated $::validated"
}
