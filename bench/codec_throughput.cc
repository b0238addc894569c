// What one split message costs to encode and decode, outside the network: a 2 MiB activation
// (batch 8, 16 channels, 64×64, the deep cut's a1) through EncodeTensor, protobuf
// serialization and parsing, and DecodeTensor with the NaN/Inf check the coordinator and the
// site apply. fp32 and fp16; dense, and the sparse layouts on a rectified copy (half zeros)
// and a gradient on its support; milliseconds per message, median of the repeats. Also times
// torch::isfinite(t).all(), the check DecodeTensor used before its plain loop.
//
// Usage: bench_codec_throughput [repeats]   (threads as the federation uses them: 2)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/median.h"
#include "proto/tensor_codec.h"
#include "process/allocator.h"
#include "process/openmp_wait.h"

namespace {

using splitfed::bench::Median;
using namespace splitfed;
using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  ShortenOpenMpSpin(argv);
  KeepTrainingBuffersInHeap();  // as `splitfed` runs: no page faults per message
  const int repeats = argc > 1 ? std::stoi(argv[1]) : 200;
  torch::set_num_threads(2);
  torch::manual_seed(1);
  const torch::Tensor a1 = torch::randn({8, 16, 64, 64});
  DecodeLimits limits;
  limits.expected_dtype = v1::DTYPE_FLOAT32;
  limits.reject_non_finite = true;
  // A rectified activation (half zeros, as after a ReLU) and a gradient for it, for the
  // sparse layouts (docs/PROTOCOL.md, "Sparse layouts").
  const torch::Tensor rectified = torch::relu(a1);
  const torch::Tensor gradient = torch::randn_like(a1);
  std::printf("%-6s %-10s %10s %12s %12s %12s %12s\n", "wire", "layout", "bytes", "encode ms",
              "serialize ms", "parse ms", "decode ms");
  for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16}) {
    Support support;  // of the rectified activation, for the gradient's row
    for (const char* layout : {"dense", "nonzero", "onsupport"}) {
      const std::string name = layout;
      std::vector<double> encode, serialize, parse, decode;
      size_t bytes = 0;
      for (int i = 0; i < repeats; ++i) {
        v1::Tensor message, received;
        std::string wire;
        const auto t0 = Clock::now();
        const absl::Status encoded =
            name == "dense"     ? EncodeTensor(a1, e, &message)
            : name == "nonzero" ? EncodeRectified(rectified, e, &message, &support)
                                : EncodeOnSupport(gradient, support, e, &message);
        if (!encoded.ok()) return 1;
        const auto t1 = Clock::now();
        message.SerializeToString(&wire);
        const auto t2 = Clock::now();
        received.ParseFromString(wire);
        const auto t3 = Clock::now();
        DecodeLimits l = limits;
        l.support = &support;
        if (!DecodeTensor(received, l, "a1").ok()) return 1;
        const auto t4 = Clock::now();
        encode.push_back(Ms(t0, t1));
        serialize.push_back(Ms(t1, t2));
        parse.push_back(Ms(t2, t3));
        decode.push_back(Ms(t3, t4));
        bytes = wire.size();
      }
      std::printf("%-6s %-10s %10zu %12.3f %12.3f %12.3f %12.3f\n",
                  e == WireEncoding::kFp16 ? "fp16" : "fp32", layout, bytes, Median(encode),
                  Median(serialize), Median(parse), Median(decode));
    }
  }
  std::vector<double> check;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    const bool finite = torch::isfinite(a1).all().item<bool>();
    check.push_back(Ms(t0, Clock::now()));
    if (!finite) return 1;
  }
  std::printf("torch::isfinite(a1).all(): %.3f ms\n", Median(check));
  return 0;
}
