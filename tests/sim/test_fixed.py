"""potatura.sim.fixed against the ap_types headers shipped in hls4ml, compiled with g++ here.

One C++ program holds every case (a template instantiation per type combination); it reads the
operands as raw bits and prints the result bits, so widths over 64 bits travel exactly.
"""

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from potatura.hw.types import OVERFLOW_MODES, QUANTIZATION_MODES, FixedType
from potatura.sim import fixed

AP_TYPES = Path(__import__("hls4ml").__file__).parent / "templates" / "vivado" / "ap_types"
VALUES_PER_CASE = 1200


def random_type(rng, max_width=96, modes=True) -> FixedType:
    width = int(rng.choice([rng.integers(1, 20), rng.integers(1, 40), rng.integers(1, max_width + 1)]))
    integer = int(rng.integers(-6, width + 7))
    signed = bool(rng.integers(0, 2)) if width > 1 else False
    if not modes:
        return FixedType(signed, width, integer)
    return FixedType(signed, width, integer, str(rng.choice(QUANTIZATION_MODES)), str(rng.choice(OVERFLOW_MODES)))


def random_codes(rng, t: FixedType, n: int) -> list[int]:
    lo = -(1 << (t.width - 1)) if t.signed else 0
    hi = (1 << (t.width - 1)) - 1 if t.signed else (1 << t.width) - 1
    span = hi - lo + 1
    out = [lo, hi, 0 if lo <= 0 else lo]
    while len(out) < n:
        # Uniform bits, plus small magnitudes (ties and near-zero values are where modes differ).
        if rng.random() < 0.6:
            v = lo + int.from_bytes(rng.bytes((t.width + 7) // 8 + 1), "little") % span
        else:
            v = int(rng.integers(-40, 41))
            v = min(max(v, lo), hi)
        out.append(v)
    return out[:n]


def ap(t: FixedType) -> str:
    return f"ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer},AP_{t.rounding},AP_{t.saturation}>"


def bits_of(code: int, t: FixedType) -> str:
    return format(code & ((1 << t.width) - 1), "x")


def code_of(bits: str, t: FixedType) -> int:
    v = int(bits, 16)
    if t.signed and v >= 1 << (t.width - 1):
        v -= 1 << t.width
    return v


def make_cases(seed=0, n_cases=84):
    """[(op, types, operand code lists / floats, expected codes)] covering every mode pair.

    -DNDEBUG below: the headers assert when a cast drops more bits than the source has (they then
    use the sign bit, as the numpy model does); csim never builds those casts.
    """
    rng = np.random.default_rng(seed)
    combos = [(q, o) for q in QUANTIZATION_MODES for o in OVERFLOW_MODES]
    cases = []
    for i in range(n_cases):
        q, o = combos[i % len(combos)]
        op = ["cast", "cast", "mul", "add", "float", "div"][i % 6]
        d = random_type(rng)
        d = FixedType(d.signed, d.width, d.integer, q, o)
        if op == "cast":
            s = random_type(rng)
            x = random_codes(rng, s, VALUES_PER_CASE)
            expected = fixed.cast(np.array(x, dtype=object), s, d)
            cases.append(("cast", (s, d), (x,), expected))
        elif op in ("mul", "add"):
            a, b = random_type(rng, 48), random_type(rng, 48)
            x, y = random_codes(rng, a, VALUES_PER_CASE), random_codes(rng, b, VALUES_PER_CASE)
            xa, ya = np.array(x, dtype=object), np.array(y, dtype=object)
            if op == "mul":
                p = fixed.multiply(xa, ya, a, b)
                expected = fixed.cast(p, a.frac + b.frac, d)
                assert fixed.product_type(a, b).width == a.width + b.width
            else:
                s_, frac = fixed.add(xa, ya, a.frac, b.frac)
                expected = fixed.cast(s_, frac, d)
            cases.append((op, (a, b, d), (x, y), expected))
        elif op == "float":
            mags = rng.choice([1.0, 2.0 ** -d.frac, 2.0 ** (d.integer - 1)])
            f = rng.standard_normal(VALUES_PER_CASE) * mags * rng.choice([0.5, 1, 4], VALUES_PER_CASE)
            f[: VALUES_PER_CASE // 4] = np.round(f[: VALUES_PER_CASE // 4] * 2.0 ** (d.frac + 1)) / 2.0 ** (d.frac + 1)
            expected = fixed.from_float(f, d)
            cases.append(("float", (d,), (list(f),), expected))
        else:
            x = random_codes(rng, d, VALUES_PER_CASE)
            n = [int(v) for v in rng.integers(1, 26, VALUES_PER_CASE)]
            expected = fixed.overflow(fixed.divide_int(np.array(x, dtype=object), np.array(n, dtype=object)), d)
            cases.append(("div", (d,), (x, n), expected))
    return cases


def cpp_program(cases) -> str:
    lines = ['#include "ap_fixed.h"', "#include <cstdio>", "#include <cstring>", "#include <iostream>",
             "#include <string>", "using namespace std;",
             "template <class T, int W> T read_bits() { string s; cin >> s; ap_uint<W> u(s.c_str(), 16); T x; "
             "x.range(W - 1, 0) = u; return x; }",
             "template <class T, int W> void print(const T& r) { ap_uint<W> b = r.range(W - 1, 0); "
             "cout << b.to_string(16, false) << '\\n'; }",
             "int main() { int n; string op;", "while (cin >> op >> n) {"]
    for i, (op, types, _, _) in enumerate(cases):
        d = types[-1]
        body = f"if (op == \"c{i}\") for (int k = 0; k < n; k++) {{ "
        if op == "cast":
            s = types[0]
            body += f"{ap(s)} x = read_bits<{ap(s)}, {s.width}>(); {ap(d)} r = x; "
        elif op in ("mul", "add"):
            a, b = types[0], types[1]
            sym = "*" if op == "mul" else "+"
            body += (f"{ap(a)} x = read_bits<{ap(a)}, {a.width}>(); {ap(b)} y = read_bits<{ap(b)}, {b.width}>(); "
                     f"{ap(d)} r = x {sym} y; ")
        elif op == "float":
            body += ("string s; cin >> s; unsigned long long u = stoull(s, nullptr, 16); double f; "
                     f"memcpy(&f, &u, 8); {ap(d)} r = f; ")
        else:
            body += f"{ap(d)} r = read_bits<{ap(d)}, {d.width}>(); unsigned m; cin >> m; r /= m; "
        body += f"print<{ap(d)}, {d.width}>(r); }}"
        lines.append(body)
    lines += ["}", "return 0; }"]
    return "\n".join(lines)


def stdin_text(cases) -> str:
    out = []
    for i, (op, types, operands, _) in enumerate(cases):
        out.append(f"c{i} {len(operands[0])}")
        if op == "cast":
            out += [bits_of(v, types[0]) for v in operands[0]]
        elif op in ("mul", "add"):
            out += [f"{bits_of(x, types[0])} {bits_of(y, types[1])}" for x, y in zip(*operands)]
        elif op == "float":
            out += [format(struct.unpack("<Q", struct.pack("<d", f))[0], "x") for f in operands[0]]
        else:
            out += [f"{bits_of(x, types[0])} {n}" for x, n in zip(*operands)]
    return "\n".join(out) + "\n"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (the hls4ml csim toolchain)")
def test_fixed_point_equals_ap_types_headers(tmp_path):
    cases = make_cases()
    total = sum(len(c[2][0]) for c in cases)
    assert total >= 100_000
    assert {c[1][-1].rounding for c in cases} == set(QUANTIZATION_MODES)
    assert {c[1][-1].saturation for c in cases} == set(OVERFLOW_MODES)
    assert max(c[1][-1].width for c in cases) > 64
    src = tmp_path / "fx.cpp"
    src.write_text(cpp_program(cases))
    exe = tmp_path / "fx"
    subprocess.run(["g++", "-O0", "-DNDEBUG", "-std=c++14", f"-I{AP_TYPES}", str(src), "-o", str(exe)], check=True,
                   capture_output=True)
    out = subprocess.run([str(exe)], input=stdin_text(cases), capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == total
    pos = 0
    mismatches = []
    for i, (op, types, operands, expected) in enumerate(cases):
        d = types[-1]
        got = [code_of(s, d) for s in out[pos:pos + len(expected)]]
        pos += len(expected)
        exp = [int(v) for v in expected]
        bad = [k for k in range(len(exp)) if got[k] != exp[k]]
        if bad:
            k = bad[0]
            mismatches.append(f"case {i} {op} {[ap(t) for t in types]}: {len(bad)} differ, e.g. operands "
                              f"{[o[k] for o in operands]}: g++ {got[k]}, numpy {exp[k]}")
    assert not mismatches, "\n".join(mismatches[:10])
