"""potatura's cycle-accurate simulator of the generated accelerators (the `sim` stage).

- fixed: ap_fixed/ap_int arithmetic on integer codes (every quantization and overflow mode), the
  project's one fixed-point implementation.
- functional: each IR op on integer tensors, bit-exact with hls4ml's HLS C++.
- schedule: what hls4ml builds per layer (loops, trip counts, initiation intervals, pipeline depths)
  as programs of the engine's modules; engine: the event-driven dataflow timing with bounded FIFOs.
- api: load_project(dir) -> Accelerator (run, cycles, size_fifos); stage / cli: `potatura sim`.
"""
