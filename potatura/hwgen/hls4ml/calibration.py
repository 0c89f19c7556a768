"""Calibrate the fitter's LUT rule for constant multipliers in LUTs (the pynq-z2 case: no DSPs below
DSP_MIN_WIDTH bits) with yosys `synth_xilinx` (Debian's yosys; no vendor tool).

Each case is the multiply-accumulate block hls4ml's Latency strategy unrolls for a dense layer at
reuse factor 1: n_out sums of n_in products of an unsigned input by a constant signed weight, plus a
constant bias, in an accumulator that never wraps. The weights are random narrow-range codes with a
share of zeros (pruned models); zero products are removed, as HLS does. yosys maps the design to
Xilinx 7-series primitives (-family xc7 -nodsp); the LUT count is the sum of its LUT1..LUT6 cells.

    python -m potatura.hwgen.hls4ml.calibration [--out tests/hwgen/data/lut_calibration.json]

writes the table (each case: shape, widths, products, yosys LUTs, the rule's estimate, the error) and
the fitted LUT_PER_PRODUCT_BIT with the largest error left (the fitter's error band). yosys is not
Vivado: its counts are a proxy for Vivado's synthesis of the same logic, and say so in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# (n_in, n_out, input bits, weight bits, zero share): 8-bit blocks of the sizes the digits models have,
# plus 6- and 4-bit ones to see the a*b scaling.
CASES = (
    (4, 4, 8, 8, 0.0), (8, 4, 8, 8, 0.0), (16, 4, 8, 8, 0.0), (16, 4, 8, 8, 0.5), (32, 2, 8, 8, 0.5),
    (9, 4, 8, 8, 0.25), (16, 4, 6, 6, 0.0), (16, 4, 4, 4, 0.0),
)


def accumulator_bits(n_in: int, a: int, b: int) -> int:
    """Bits of a sum of n_in products of an unsigned a-bit and a signed b-bit value and a bias, never wrapping."""
    return a + b + math.ceil(math.log2(n_in + 1)) + 1


def weights(n_in: int, n_out: int, b: int, zeros: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lim = 2 ** (b - 1) - 1
    w = rng.integers(-lim, lim + 1, size=(n_in, n_out))
    w[rng.random((n_in, n_out)) < zeros] = 0
    return w


def verilog(w: np.ndarray, a: int, b: int, acc: int) -> str:
    n_in, n_out = w.shape
    lines = [f"module mac(input [{a * n_in - 1}:0] x, output [{acc * n_out - 1}:0] y);"]
    for j in range(n_out):
        terms = [f"$signed({{1'b0, x[{i * a} +: {a}]}}) * {int(w[i, j])}" for i in range(n_in) if w[i, j] != 0]
        bias = (j * 37) % (2 ** (b - 1)) - 2 ** (b - 2)
        expr = " + ".join(terms + [str(bias)]) if terms else str(bias)
        lines.append(f"  wire signed [{acc - 1}:0] s{j} = {expr};")
        lines.append(f"  assign y[{(j + 1) * acc - 1}:{j * acc}] = s{j};")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def yosys_luts(source: str, yosys: str = "yosys") -> dict[str, int]:
    """LUT and CARRY4 cells of `source` after yosys synth_xilinx -family xc7 -nodsp."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mac.v"
        path.write_text(source)
        proc = subprocess.run([yosys, "-q", "-p", f"read_verilog {path}; synth_xilinx -family xc7 -nodsp -top mac; "
                               "tee -o /dev/stdout stat"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed: {proc.stderr[-2000:]}")
    cells = {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", proc.stdout, re.M)}
    if not cells:  # yosys < 0.40 prints "name count"
        cells = {name: int(count) for name, count in re.findall(r"^\s+(\w+)\s+(\d+)\s*$", proc.stdout, re.M)}
    luts = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    return {"lut": luts, "carry4": cells.get("CARRY4", 0)}


def rule_lut(products: int, a: int, b: int, acc: int, lut_per_product_bit: float) -> float:
    """The fitter's rule (fitter.estimate_layer, Latency, RF 1, no DSP): a*b*k LUTs per product + an adder of acc bits."""
    return products * (lut_per_product_bit * a * b + acc)


def calibrate(yosys: str = "yosys", seed: int = 0) -> dict:
    rows = []
    for k, (n_in, n_out, a, b, zeros) in enumerate(CASES):
        w = weights(n_in, n_out, b, zeros, seed + k)
        acc = accumulator_bits(n_in, a, b)
        measured = yosys_luts(verilog(w, a, b, acc), yosys)
        rows.append({"n_in": n_in, "n_out": n_out, "input_bits": a, "weight_bits": b, "accumulator_bits": acc,
                     "zero_share": zeros, "products": int(np.count_nonzero(w)), "yosys_lut": measured["lut"],
                     "yosys_carry4": measured["carry4"]})
    # Least squares of yosys LUT - adders = k * sum(products * a * b): the one coefficient of the rule.
    x = np.array([r["products"] * r["input_bits"] * r["weight_bits"] for r in rows], dtype=float)
    y = np.array([r["yosys_lut"] - r["products"] * r["accumulator_bits"] for r in rows], dtype=float)
    k = round(float(max(x @ y / (x @ x), 0.0)), 4)  # the constant the fitter uses (fitter.LUT_PER_PRODUCT_BIT)
    for r in rows:
        r["rule_lut"] = round(rule_lut(r["products"], r["input_bits"], r["weight_bits"], r["accumulator_bits"], k))
        r["error"] = round((r["rule_lut"] - r["yosys_lut"]) / r["yosys_lut"], 4)
    version = subprocess.run([yosys, "-V"], capture_output=True, text=True).stdout.strip()
    return {
        "about": "LUTs of constant multiply-accumulate blocks (hls4ml Latency dense at RF 1, products by constant "
                 "weights in LUTs) as yosys synth_xilinx -family xc7 -nodsp maps them, against the fitter's rule "
                 "products * (LUT_PER_PRODUCT_BIT * a * b + accumulator bits); written by "
                 "`python -m potatura.hwgen.hls4ml.calibration`",
        "tool": version, "source": "measured here with yosys (a proxy for Vivado synthesis, not Vivado)",
        "lut_per_product_bit": round(k, 4),
        "max_abs_error": max(abs(r["error"]) for r in rows), "cases": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/hwgen/data/lut_calibration.json"))
    parser.add_argument("--yosys", default=shutil.which("yosys") or "yosys")
    args = parser.parse_args(argv)
    table = calibrate(args.yosys)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"LUT_PER_PRODUCT_BIT {table['lut_per_product_bit']}, largest error {table['max_abs_error']:.1%} "
          f"over {len(table['cases'])} cases ({table['tool']}) -> {args.out}")
    for r in table["cases"]:
        print(f"  {r['n_in']}x{r['n_out']} {r['input_bits']}x{r['weight_bits']} bit, {r['products']} products: "
              f"yosys {r['yosys_lut']} LUT, rule {r['rule_lut']} ({r['error']:+.1%})")


if __name__ == "__main__":
    main()
