// XRT host of potatura's HLSinf-style engine for @@BOARD@@ (written by `potatura hwgen`): one
// sample through every kernel call of calls.txt, layer by layer, activations kept in device memory.
//   host/hlsinf_host hlsinf.xclbin input_ghwc.bin output_ghwc.bin
// Files (little endian): tensors.txt "name words" per tensor (GHWC words of ENGINE_DATA_BITS),
// calls.txt "input output filters residual arg0 .. arg26" per call (tensor/filter indices, the residual
// tensor's index or -1, KernelArgs order),
// weights/<i>_filters.bin (ENGINE_WEIGHT_BITS words), weights/<i>_bias.bin (ENGINE_ACC_BITS words).
#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "xrt/xrt_bo.h"
#include "xrt/xrt_device.h"
#include "xrt/xrt_kernel.h"
#include "../src/engine_params.h"

static std::vector<char> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int main(int argc, char **argv) {
    if (argc != 4) { std::cerr << "usage: hlsinf_host hlsinf.xclbin input_ghwc.bin output_ghwc.bin\n"; return 2; }
    xrt::device device(0);
    auto uuid = device.load_xclbin(argv[1]);
    xrt::kernel kernel(device, uuid, "hlsinf_top");
    const size_t data_bytes = ENGINE_DATA_BITS / 8;

    std::vector<xrt::bo> tensors;
    std::ifstream tf("tensors.txt");
    std::string name; long words;
    while (tf >> name >> words) tensors.emplace_back(device, words * data_bytes, kernel.group_id(0));
    std::vector<std::vector<long long>> calls;
    std::ifstream cf("calls.txt");
    for (std::string line; std::getline(cf, line);) {
        std::istringstream is(line); std::vector<long long> v; long long x;
        while (is >> x) v.push_back(x);
        if (!v.empty()) calls.push_back(v);
    }
    std::vector<xrt::bo> filters, biases;
    for (int i = 0;; i++) {
        std::ifstream probe("weights/" + std::to_string(i) + "_filters.bin");
        if (!probe) break;
        auto f = read_file("weights/" + std::to_string(i) + "_filters.bin");
        auto b = read_file("weights/" + std::to_string(i) + "_bias.bin");
        filters.emplace_back(device, f.size(), kernel.group_id(1)); filters.back().write(f.data()); filters.back().sync(XCL_BO_SYNC_BO_TO_DEVICE);
        biases.emplace_back(device, b.size(), kernel.group_id(2));  // arg 3: the residual, bank of arg 0 biases.back().write(b.data()); biases.back().sync(XCL_BO_SYNC_BO_TO_DEVICE);
    }
    auto input = read_file(argv[2]);
    tensors[0].write(input.data()); tensors[0].sync(XCL_BO_SYNC_BO_TO_DEVICE);
    for (const auto &c : calls) {  // the engine runs one call at a time: a layer's frames, then the next layer
        const auto *a = c.data() + 4;  // the 27 KernelArgs
        xrt::bo &residual = tensors[c[3] >= 0 ? c[3] : c[1]];  // not read without a residual
        auto run = kernel(tensors[c[0]], filters[c[2]], biases[c[2]], residual, tensors[c[1]], (int)a[0], (int)a[1],
                          (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6], (int)a[7], (int)a[8], (int)a[9],
                          (int)a[10], (int)a[11], (int)a[12], (int)a[13], (int)a[14], (int)a[15], a[16], a[17],
                          (int)a[18], (int)a[19], (int)a[20], (int)a[21], (int)a[22], (int)a[23], (int)a[24], a[25],
                          a[26]);
        run.wait();
    }
    long out_index = calls.back()[1];
    xrt::bo &out = tensors[out_index];
    out.sync(XCL_BO_SYNC_BO_FROM_DEVICE);
    std::vector<char> host(out.size());
    out.read(host.data());
    std::ofstream(argv[3], std::ios::binary).write(host.data(), host.size());
    return 0;
}
