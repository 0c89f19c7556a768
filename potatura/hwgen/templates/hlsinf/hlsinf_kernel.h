// potatura's HLSinf-style layer engine (one fused 3x3 convolution layer per call).
//
// Written for potatura after the architecture published by UPV's HLSinf (Flich et al., ICIP 2022;
// potatura docs/hardware.md section 3), not from its source: read GHWC -> padding -> 3x3 window ->
// CPI x CPO multiply-accumulate at II=1 -> bias + accumulation over input groups ->
// ReLU / power-of-two requantization (shift, round, clip) -> 2x2 max pooling or stride-2 subsampling ->
// residual add (+ ReLU / requantization) -> write GHWC.
//
// Integer codes throughout: activations data_t = ap_int<DATA_BITS> in DDR (ap_int<PIXEL_BITS> at
// the multipliers), weights ap_int<WEIGHT_BITS>,
// accumulators and biases ap_int<ACC_BITS>. Each layer's own fixed-point types live in the host
// plan (potatura/hwgen/hlsinf/planner.py): it aligns weights and biases to the accumulator's
// fractional bits and passes the requantization as shift/rounding/clip arguments, so the engine
// reproduces the QONNX Quant semantics exactly (round half to even or floor, then saturate).
//
// Layouts: activations GHWC, address = gi*H*W*CPI + h*W*CPI + w*CPI + ii (channels padded to
// groups of CPI); filters GO x GI x CPO x CPI x 3 x 3; bias (GO*CPO).
// Schedule (the cycle model of potatura.sim.hlsinf): for each output group, for each input group,
// one padded input pixel a cycle: O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) + O_ITER*L_PIPE.
#ifndef POTATURA_HLSINF_KERNEL_H
#define POTATURA_HLSINF_KERNEL_H

#include "ap_int.h"

namespace potatura_hlsinf {

// Run-time arguments of one call (the order of KernelCall.args() on the host).
struct KernelArgs {
    int I, O;              // input / output channels (real; padded ones read as zero / are not written)
    int H, W;              // rows and columns of the whole input tensor
    int in_row0, in_rows;  // the rows this frame reads
    int pt, pb, pl, pr;    // zero padding of this frame (top only on the first frame, bottom on the last)
    int out_h, out_w;      // rows and columns of the whole output tensor
    int out_row0;          // first output row this frame writes (after pooling)
    int relu;              // ReLU on the accumulator before requantization
    int shift;             // accumulator code >> shift (negative: << -shift)
    int rounding;          // 0: floor (TRN), 1: round half to even (RND_CONV)
    long long clip_lo, clip_hi;  // saturation bounds of the requantized code
    int pool;              // 0: none, 1: 2x2 stride-2 max pooling, 2: stride-2 subsampling (a stride-2 conv)
    int add;               // residual add of the tensor at `add_in` (the output's shape), after pooling
    int add_shift_main, add_shift_skip;  // left shifts aligning both addends to the sum's fractional bits
    int relu2, shift2, rounding2;        // requantization of the sum (as relu/shift/rounding above)
    long long clip2_lo, clip2_hi;        // saturation bounds of the stored code after the add
};
static const int N_ARGS = 27;

inline long long round_shift_clip(long long v, int relu, int shift, int rounding, long long lo, long long hi) {
#pragma HLS INLINE
    if (relu && v < 0) v = 0;
    if (shift > 0) {
        long long floor_v = v >> shift;  // arithmetic shift: floor
        if (rounding == 1) {
            long long rem = v - (floor_v << shift);  // in [0, 2**shift)
            long long half = 1LL << (shift - 1);
            if (rem > half || (rem == half && (floor_v & 1))) floor_v += 1;  // half to even
        }
        v = floor_v;
    } else if (shift < 0) {
        v = v << (-shift);
    }
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return v;
}

inline long long requantize(long long v, const KernelArgs &a) {
#pragma HLS INLINE
    return round_shift_clip(v, a.relu, a.shift, a.rounding, a.clip_lo, a.clip_hi);
}

template <int CPI, int CPO, int HO_MAX, int WO_MAX, int DATA_BITS, int WEIGHT_BITS, int ACC_BITS, int PIXEL_BITS>
struct Engine {
    typedef ap_int<DATA_BITS> data_t;
    typedef ap_int<WEIGHT_BITS> weight_t;
    typedef ap_int<ACC_BITS> acc_t;
    typedef ap_int<PIXEL_BITS> pixel_t;  // the multiplier's activation operand (a DSP port)

    // Returns 0, or a negative code when the call does not fit the engine (checked by the planner too).
    static int run(const data_t *in, const weight_t *filters, const acc_t *bias, const data_t *add_in, data_t *out,
                   const KernelArgs &a) {
        const int rows = a.in_rows + a.pt + a.pb;  // padded frame
        const int cols = a.W + a.pl + a.pr;
        const int conv_h = rows - 2, conv_w = cols - 2;
        if (conv_h < 1 || conv_w < 1) return -1;
        if (conv_h > HO_MAX || conv_w > WO_MAX) return -2;
        const int i_iter = (a.I + CPI - 1) / CPI;
        const int o_iter = (a.O + CPO - 1) / CPO;
        static acc_t sums[HO_MAX][WO_MAX][CPO];
        static pixel_t line[3][WO_MAX + 2][CPI];
#pragma HLS ARRAY_PARTITION variable=sums dim=3 complete
#pragma HLS ARRAY_PARTITION variable=line dim=1 complete
#pragma HLS ARRAY_PARTITION variable=line dim=3 complete
    output_groups:
        for (int go = 0; go < o_iter; go++) {
        input_groups:
            for (int gi = 0; gi < i_iter; gi++) {
                // The filters of this (output group, input group) pair; HLS overlaps the load with the
                // previous pair's pixels (part of the per-group pipeline cost L_PIPE of the cycle model).
                weight_t w[CPO][CPI][9];
#pragma HLS ARRAY_PARTITION variable=w complete dim=0
                const weight_t *fg = filters + ((long)(go * i_iter + gi)) * CPO * CPI * 9;
                for (int o = 0; o < CPO; o++)
                    for (int i = 0; i < CPI; i++)
                        for (int k = 0; k < 9; k++) w[o][i][k] = fg[(o * CPI + i) * 9 + k];
                const data_t *group = in + (long)gi * a.H * a.W * CPI;
                const bool first = gi == 0, last = gi == i_iter - 1;
            pixels:  // one padded input pixel a cycle: the schedule O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR)
                for (int r = 0; r < rows; r++) {
                    for (int c = 0; c < cols; c++) {
#pragma HLS PIPELINE II=1
                        const int h = a.in_row0 + r - a.pt, x = c - a.pl;
                        const bool inside = r >= a.pt && r < a.pt + a.in_rows && x >= 0 && x < a.W;
                        for (int i = 0; i < CPI; i++) {
                            pixel_t px = 0;
                            if (inside && gi * CPI + i < a.I) px = (pixel_t)group[((long)h * a.W + x) * CPI + i];
                            line[0][c][i] = line[1][c][i];
                            line[1][c][i] = line[2][c][i];
                            line[2][c][i] = px;
                        }
                        if (r < 2 || c < 2) continue;
                        const int orow = r - 2, ocol = c - 2;  // conv output pixel of this frame
                        for (int o = 0; o < CPO; o++) {
                            // Bias + accumulation over input groups: the first group starts from the bias.
                            acc_t s = first ? bias[go * CPO + o] : sums[orow][ocol][o];
                            for (int i = 0; i < CPI; i++)
                                for (int kh = 0; kh < 3; kh++)
                                    for (int kw = 0; kw < 3; kw++)
                                        s += line[kh][ocol + kw][i] * w[o][i][kh * 3 + kw];
                            if (!last) {
                                sums[orow][ocol][o] = s;
                                continue;
                            }
                            // The last input group streams on: requantize -> pool -> residual add -> write.
                            long long v = requantize(s.to_int64(), a);
                            int wr = orow, wc = ocol;
                            if (a.pool == 1) {  // 2x2 max: kept until the window's last pixel arrives
                                sums[orow][ocol][o] = v;
                                if ((orow & 1) == 0 || (ocol & 1) == 0) continue;
                                for (int dr = 0; dr < 2; dr++)
                                    for (int dc = 0; dc < 2; dc++) {
                                        const long long q = sums[orow - dr][ocol - dc][o].to_int64();
                                        if (q > v) v = q;
                                    }
                                wr = orow / 2, wc = ocol / 2;
                            } else if (a.pool == 2) {  // stride 2: the even rows and columns
                                if ((orow & 1) || (ocol & 1)) continue;
                                wr = orow / 2, wc = ocol / 2;
                            }
                            const int ch = go * CPO + o;
                            if (ch >= a.O || wc >= a.out_w) continue;
                            const long addr = (long)(ch / CPI) * a.out_h * a.out_w * CPI +
                                              ((long)(a.out_row0 + wr) * a.out_w + wc) * CPI + ch % CPI;
                            if (a.add) {
                                long long sum = (v << a.add_shift_main) + (add_in[addr].to_int64() << a.add_shift_skip);
                                v = round_shift_clip(sum, a.relu2, a.shift2, a.rounding2, a.clip2_lo, a.clip2_hi);
                            }
                            out[addr] = (data_t)v;
                        }
                    }
                }
            }
        }
        return 0;
    }
};

}  // namespace potatura_hlsinf

#endif
