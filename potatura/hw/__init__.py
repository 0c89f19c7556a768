"""potatura's hardware IR: what every backend, the simulator, the emulated board and the reports read.

numpy only: no torch, brevitas, qonnx or hls4ml import here (the board side imports it too).
"""
