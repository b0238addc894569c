// What one Adam step costs on the coordinator's body (U-Net f = 16, depth 4, deep cut: 1.9 M
// parameters): LibTorch's torch::optim::Adam against the fused splitfed::Adam the trainers use
// (split/adam.h), on 1 and 2 threads. Milliseconds per step, median of the repeats, after a
// few warm-up steps; random gradients, redrawn between repeats.
//
// Usage: bench_optimizer_step [steps per repeat] [repeats] [out.json]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/median.h"
#include "split/adam.h"
#include "process/openmp_wait.h"
#include "split/unet.h"

namespace {

using splitfed::bench::Median;
using Clock = std::chrono::steady_clock;

// Milliseconds per call of `step`, median over `repeats` runs of `steps` calls each.
template <typename Step>
double TimeSteps(std::vector<torch::Tensor>& parameters, int steps, int repeats, Step step) {
  std::vector<double> ms;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up
    for (torch::Tensor& p : parameters) p.mutable_grad() = torch::randn_like(p);
    const auto start = Clock::now();
    for (int i = 0; i < steps; ++i) step();
    const double elapsed = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (r > 0) ms.push_back(elapsed / steps);
  }
  return Median(ms);
}

}  // namespace

int main(int argc, char** argv) {
  splitfed::ShortenOpenMpSpin(argv);
  const int steps = argc > 1 ? std::stoi(argv[1]) : 50;
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 5;
  const std::string out_path = argc > 3 ? argv[3] : "";
  torch::manual_seed(1);
  splitfed::SplitModel model =
      splitfed::MakeSplitModel(splitfed::UNetConfig{}, splitfed::SplitSpec::Deep());
  std::vector<torch::Tensor> parameters = model.body->parameters();
  int64_t count = 0;
  for (const torch::Tensor& p : parameters) count += p.numel();
  std::printf("body parameters: %lld\n%-8s %14s %14s\n", static_cast<long long>(count), "threads",
              "libtorch ms", "fused ms");
  nlohmann::json results = nlohmann::json::array();
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    torch::optim::Adam libtorch(parameters, torch::optim::AdamOptions(1e-3));
    splitfed::Adam fused(parameters, splitfed::AdamOptions{1e-3});
    const double libtorch_ms = TimeSteps(parameters, steps, repeats, [&] { libtorch.step(); });
    const double fused_ms = TimeSteps(parameters, steps, repeats, [&] { fused.Step(); });
    std::printf("%-8d %14.2f %14.2f\n", threads, libtorch_ms, fused_ms);
    results.push_back({{"threads", threads},
                       {"parameters", count},
                       {"libtorch_adam_ms", libtorch_ms},
                       {"fused_adam_ms", fused_ms}});
  }
  if (!out_path.empty()) std::ofstream(out_path) << results.dump(2) << "\n";
  return 0;
}
