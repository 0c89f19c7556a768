// HLS top function of potatura's HLSinf-style engine for @@BOARD@@, written by `potatura hwgen`.
// One call runs one fused layer (one row frame); the host (PYNQ driver / XRT host) loops over the
// calls of plan.json. Memory ports: activations in, filters + biases, the residual input, activations
// out, each an AXI
// master on its own bundle (Zynq: PS HP ports; Alveo: memory banks); arguments over AXI-Lite.
#include "hlsinf_kernel.h"
#include "engine_params.h"

typedef potatura_hlsinf::Engine<ENGINE_CPI, ENGINE_CPO, ENGINE_HO_MAX, ENGINE_WO_MAX, ENGINE_DATA_BITS,
                                ENGINE_WEIGHT_BITS, ENGINE_ACC_BITS, ENGINE_PIXEL_BITS> engine_t;

extern "C" int hlsinf_top(const engine_t::data_t *act_in, const engine_t::weight_t *filters,
                          const engine_t::acc_t *bias, const engine_t::data_t *act_add, engine_t::data_t *act_out,
                          int I, int O, int H, int W,
                          int in_row0, int in_rows, int pt, int pb, int pl, int pr, int out_h, int out_w,
                          int out_row0, int relu, int shift, int rounding, long long clip_lo, long long clip_hi,
                          int pool, int add, int add_shift_main, int add_shift_skip, int relu2, int shift2,
                          int rounding2, long long clip2_lo, long long clip2_hi) {
#pragma HLS INTERFACE m_axi port=act_in offset=slave bundle=gmem_in max_read_burst_length=256
#pragma HLS INTERFACE m_axi port=filters offset=slave bundle=gmem_weights
#pragma HLS INTERFACE m_axi port=bias offset=slave bundle=gmem_weights
#pragma HLS INTERFACE m_axi port=act_add offset=slave bundle=gmem_add max_read_burst_length=256
#pragma HLS INTERFACE m_axi port=act_out offset=slave bundle=gmem_out max_write_burst_length=256
#pragma HLS INTERFACE s_axilite port=act_add bundle=control
#pragma HLS INTERFACE s_axilite port=act_in bundle=control
#pragma HLS INTERFACE s_axilite port=filters bundle=control
#pragma HLS INTERFACE s_axilite port=bias bundle=control
#pragma HLS INTERFACE s_axilite port=act_out bundle=control
#pragma HLS INTERFACE s_axilite port=I bundle=control
#pragma HLS INTERFACE s_axilite port=O bundle=control
#pragma HLS INTERFACE s_axilite port=H bundle=control
#pragma HLS INTERFACE s_axilite port=W bundle=control
#pragma HLS INTERFACE s_axilite port=in_row0 bundle=control
#pragma HLS INTERFACE s_axilite port=in_rows bundle=control
#pragma HLS INTERFACE s_axilite port=pt bundle=control
#pragma HLS INTERFACE s_axilite port=pb bundle=control
#pragma HLS INTERFACE s_axilite port=pl bundle=control
#pragma HLS INTERFACE s_axilite port=pr bundle=control
#pragma HLS INTERFACE s_axilite port=out_h bundle=control
#pragma HLS INTERFACE s_axilite port=out_w bundle=control
#pragma HLS INTERFACE s_axilite port=out_row0 bundle=control
#pragma HLS INTERFACE s_axilite port=relu bundle=control
#pragma HLS INTERFACE s_axilite port=shift bundle=control
#pragma HLS INTERFACE s_axilite port=rounding bundle=control
#pragma HLS INTERFACE s_axilite port=clip_lo bundle=control
#pragma HLS INTERFACE s_axilite port=clip_hi bundle=control
#pragma HLS INTERFACE s_axilite port=pool bundle=control
#pragma HLS INTERFACE s_axilite port=add bundle=control
#pragma HLS INTERFACE s_axilite port=add_shift_main bundle=control
#pragma HLS INTERFACE s_axilite port=add_shift_skip bundle=control
#pragma HLS INTERFACE s_axilite port=relu2 bundle=control
#pragma HLS INTERFACE s_axilite port=shift2 bundle=control
#pragma HLS INTERFACE s_axilite port=rounding2 bundle=control
#pragma HLS INTERFACE s_axilite port=clip2_lo bundle=control
#pragma HLS INTERFACE s_axilite port=clip2_hi bundle=control
#pragma HLS INTERFACE s_axilite port=return bundle=control
    potatura_hlsinf::KernelArgs a;
    a.I = I; a.O = O; a.H = H; a.W = W; a.in_row0 = in_row0; a.in_rows = in_rows;
    a.pt = pt; a.pb = pb; a.pl = pl; a.pr = pr; a.out_h = out_h; a.out_w = out_w; a.out_row0 = out_row0;
    a.relu = relu; a.shift = shift; a.rounding = rounding; a.clip_lo = clip_lo; a.clip_hi = clip_hi; a.pool = pool;
    a.add = add; a.add_shift_main = add_shift_main; a.add_shift_skip = add_shift_skip; a.relu2 = relu2;
    a.shift2 = shift2; a.rounding2 = rounding2; a.clip2_lo = clip2_lo; a.clip2_hi = clip2_hi;
    return engine_t::run(act_in, filters, bias, act_add, act_out, a);
}
