// C simulation entry point of potatura's HLSinf-style engine: a shared library the host planner
// drives through ctypes (potatura/hwgen/hlsinf/csim.py). Compiled with g++ and the ap_types
// headers that ship inside hls4ml; the engine's parameters come from -D flags.
#include <vector>
#include "hlsinf_kernel.h"

#ifndef ENGINE_CPI
#error "define ENGINE_CPI, ENGINE_CPO, ENGINE_HO_MAX, ENGINE_WO_MAX, ENGINE_DATA_BITS, ENGINE_WEIGHT_BITS, ENGINE_ACC_BITS, ENGINE_PIXEL_BITS"
#endif

typedef potatura_hlsinf::Engine<ENGINE_CPI, ENGINE_CPO, ENGINE_HO_MAX, ENGINE_WO_MAX, ENGINE_DATA_BITS,
                                ENGINE_WEIGHT_BITS, ENGINE_ACC_BITS, ENGINE_PIXEL_BITS> engine_t;

extern "C" {

int hlsinf_params(int *out) {
    out[7] = ENGINE_PIXEL_BITS;
    out[0] = ENGINE_CPI; out[1] = ENGINE_CPO; out[2] = ENGINE_HO_MAX; out[3] = ENGINE_WO_MAX;
    out[4] = ENGINE_DATA_BITS; out[5] = ENGINE_WEIGHT_BITS; out[6] = ENGINE_ACC_BITS;
    return 8;
}

// One kernel call on int64 codes: `in` (n_in words), filters/bias of the layer, `add_in` (the residual
// tensor, n_add words, or empty), `out` updated in place (n_out words; the words this frame does not
// write keep their value). Returns 0 or < 0.
int hlsinf_call(const long long *in, long n_in, const long long *filters, long n_filters, const long long *bias,
                long n_bias, const long long *add_in, long n_add, long long *out, long n_out, const long long *args,
                int n_args) {
    if (n_args != potatura_hlsinf::N_ARGS) return -10;
    potatura_hlsinf::KernelArgs a;
    a.I = args[0]; a.O = args[1]; a.H = args[2]; a.W = args[3]; a.in_row0 = args[4]; a.in_rows = args[5];
    a.pt = args[6]; a.pb = args[7]; a.pl = args[8]; a.pr = args[9]; a.out_h = args[10]; a.out_w = args[11];
    a.out_row0 = args[12]; a.relu = args[13]; a.shift = args[14]; a.rounding = args[15];
    a.clip_lo = args[16]; a.clip_hi = args[17]; a.pool = args[18]; a.add = args[19]; a.add_shift_main = args[20];
    a.add_shift_skip = args[21]; a.relu2 = args[22]; a.shift2 = args[23]; a.rounding2 = args[24];
    a.clip2_lo = args[25]; a.clip2_hi = args[26];
    if (a.add && n_add != n_out) return -11;
    std::vector<engine_t::data_t> din(in, in + n_in), dout(out, out + n_out), dadd(add_in, add_in + n_add);
    std::vector<engine_t::weight_t> w(filters, filters + n_filters);
    std::vector<engine_t::acc_t> b(bias, bias + n_bias);
    int rc = engine_t::run(din.data(), w.data(), b.data(), dadd.data(), dout.data(), a);
    for (long k = 0; k < n_out; k++) out[k] = dout[k].to_int64();
    return rc;
}
}
