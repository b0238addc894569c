// In-process split training: one site's front/back and one body, stepped with Adam.
// Used by `splitfed demo`, the benchmarks and tests; the federated client and coordinator run
// the same ClientStep/ServerStep on either side of a network stream.
#pragma once

#include <memory>

#include "datasets/segmentation_set.h"
#include "split/loss.h"
#include "split/split_step.h"
#include "split/unet.h"

namespace torch::optim {
class Optimizer;
}

namespace splitfed {

struct TrainerOptions {
  double learning_rate = 1e-3;
  int64_t batch_size = 8;
  SegLossOptions loss;
};

struct EpochStats {
  double mean_loss = 0.0;
  int64_t images = 0;
  double seconds = 0.0;
};

class SplitTrainer {
 public:
  SplitTrainer(SplitModel model, const TrainerOptions& options);
  ~SplitTrainer();

  // One pass over `set` in an order drawn from `shuffle_seed`; the last partial batch is kept
  // unless it has a single image (BatchNorm needs two).
  EpochStats TrainEpoch(const SegmentationSet& set, uint64_t shuffle_seed);

  SplitModel& model() { return model_; }

 private:
  SplitModel model_;
  TrainerOptions options_;
  ClientStep client_;
  ServerStep server_;
  std::unique_ptr<torch::optim::Optimizer> client_optimizer_;  // front + back
  std::unique_ptr<torch::optim::Optimizer> server_optimizer_;  // body
};

}  // namespace splitfed
