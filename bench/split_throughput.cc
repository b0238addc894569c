// Training throughput of the U-Net, monolithic versus split in-process (front/body/back with
// the a1/a2/g2/g1 hand-over), for a few image sizes and thread counts. Prints a table and
// writes JSON (argv[1], default bench_split_throughput.json).
//
// Both loops do the same work per step: zero grads, forward, Dice+CE loss, backward, Adam.
// Steps of the two alternate on persistent models and the median step time is reported, so
// slow drift of the machine hits both alike. Usage: bench_split_throughput [out.json] [steps]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "bench/median.h"
#include "process/allocator.h"
#include "split/loss.h"
#include "split/split_step.h"
#include "split/unet.h"

namespace {

using splitfed::bench::Median;

using Clock = std::chrono::steady_clock;
using splitfed::ClientStep;
using splitfed::ServerStep;

constexpr int64_t kBatch = 8;

struct Workload {
  torch::Tensor images, masks;
};

// A training step of the whole net and one of the split net, each on its own model.
class WholeTrainer {
 public:
  explicit WholeTrainer(const splitfed::UNetConfig& config)
      : net_(splitfed::MakeUNet(config)),
        opt_(net_->parameters(), torch::optim::AdamOptions(1e-3)) {}
  const torch::nn::Module& net() const { return *net_; }
  void Step(const Workload& w) {
    opt_.zero_grad();
    torch::Tensor loss = splitfed::SegmentationLoss(net_->forward(w.images), w.masks);
    loss.backward();
    opt_.step();
  }

 private:
  splitfed::UNetSegment net_;
  torch::optim::Adam opt_;
};

class SplitTrainer {
 public:
  // Starts from the whole net's weights, so both do the same arithmetic on the same values.
  SplitTrainer(const splitfed::UNetConfig& config, const torch::nn::Module& whole)
      : m_(CopiedSplit(config, whole)),
        client_opt_(ClientParams(m_), torch::optim::AdamOptions(1e-3)),
        server_opt_(m_.body->parameters(), torch::optim::AdamOptions(1e-3)),
        client_(m_.front, m_.back),
        server_(m_.body) {}
  void Step(const Workload& w) {
    client_opt_.zero_grad();
    server_opt_.zero_grad();
    splitfed::SplitTrainStep(client_, server_, w.images, [&](const torch::Tensor& logits) {
      return splitfed::SegmentationLoss(logits, w.masks);
    });
    server_opt_.step();
    client_opt_.step();
  }

 private:
  static splitfed::SplitModel CopiedSplit(const splitfed::UNetConfig& config,
                                          const torch::nn::Module& whole) {
    splitfed::SplitModel m = splitfed::MakeSplitModel(config, splitfed::SplitSpec::Deep());
    splitfed::CopyStateByName(whole, *m.front);
    splitfed::CopyStateByName(whole, *m.body);
    splitfed::CopyStateByName(whole, *m.back);
    return m;
  }
  static std::vector<torch::Tensor> ClientParams(splitfed::SplitModel& m) {
    std::vector<torch::Tensor> params = m.front->parameters();
    for (const auto& p : m.back->parameters()) params.push_back(p);
    return params;
  }
  splitfed::SplitModel m_;
  torch::optim::Adam client_opt_;
  torch::optim::Adam server_opt_;
  ClientStep client_;
  ServerStep server_;
};

template <typename Fn>
double Seconds(Fn&& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  // Same allocator settings as the `splitfed` executable; SPLITFED_DEFAULT_MALLOC=1 measures
  // glibc's defaults instead.
  const char* default_malloc = std::getenv("SPLITFED_DEFAULT_MALLOC");
  if (!default_malloc || std::string(default_malloc) != "1") splitfed::KeepTrainingBuffersInHeap();
  const std::string out_path = argc > 1 ? argv[1] : "bench_split_throughput.json";
  const int steps = argc > 2 ? std::stoi(argv[2]) : 40;
  splitfed::UNetConfig config;  // f = 16, depth 4, 1 channel, 4 classes
  nlohmann::json results = nlohmann::json::array();
  std::printf("%-8s %-7s %14s %14s %8s\n", "size", "threads", "whole img/s", "split img/s",
              "ratio");
  for (int64_t size : {64, 128}) {
    torch::manual_seed(2);
    const Workload w{torch::randn({kBatch, 1, size, size}),
                     torch::randint(0, config.num_classes, {kBatch, size, size}, torch::kLong)};
    for (int threads : {1, 2}) {
      torch::set_num_threads(threads);
      torch::manual_seed(1);
      WholeTrainer whole_net(config);
      SplitTrainer split_net(config, whole_net.net());
      whole_net.Step(w);  // warm-up: allocator and kernels
      split_net.Step(w);
      // Steps alternate, and which goes first alternates too: drift of the machine and cache
      // effects hit both the same. The median step time is reported.
      std::vector<double> whole, split;
      for (int i = 0; i < steps; ++i) {
        if (i % 2 == 0) {
          whole.push_back(Seconds([&] { whole_net.Step(w); }));
          split.push_back(Seconds([&] { split_net.Step(w); }));
        } else {
          split.push_back(Seconds([&] { split_net.Step(w); }));
          whole.push_back(Seconds([&] { whole_net.Step(w); }));
        }
      }
      const double a = kBatch / Median(whole), b = kBatch / Median(split);
      std::printf("%-8s %-7d %14.1f %14.1f %8.3f\n",
                  (std::to_string(size) + "x" + std::to_string(size)).c_str(), threads, a, b,
                  b / a);
      std::fflush(stdout);
      results.push_back({{"size", size},
                         {"threads", threads},
                         {"batch", kBatch},
                         {"base_width", config.base_width},
                         {"whole_images_per_s", a},
                         {"split_images_per_s", b},
                         {"ratio", b / a},
                         {"timed_steps_each", steps}});
    }
  }
  std::ofstream(out_path) << results.dump(2) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
