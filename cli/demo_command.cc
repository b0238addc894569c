// `splitfed demo`: trains the split U-Net in one process on generated phantoms and prints the
// validation Dice after every epoch. It exercises the same front/body/back split step that the
// federation runs over the network, with one site and the coordinator's body in-process.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "datasets/phantom.h"
#include "split/trainer.h"

namespace splitfed::cli {
namespace {

struct DemoOptions {
  int64_t epochs = 8;
  int64_t train_images = 192;
  int64_t val_images = 48;
  int64_t size = 64;
  int64_t base_width = 16;
  int64_t depth = 4;
  int64_t batch_size = 8;
  double learning_rate = 2e-3;
  std::string split = "deep";
  uint64_t seed = 1;
  int threads = 0;
};


void RunDemo(const DemoOptions& o) {
  torch::set_num_threads(o.threads > 0 ? o.threads
                                        : std::max(1u, std::thread::hardware_concurrency()));
  torch::manual_seed(o.seed);

  UNetConfig model_config;
  model_config.base_width = o.base_width;
  model_config.depth = o.depth;
  absl::StatusOr<SplitSpec> split = SplitSpec::Parse(o.split);
  if (!split.ok()) throw std::invalid_argument(std::string(split.status().message()));
  if (auto s = CutShapes(model_config, *split, o.size, o.size); !s.ok())
    throw std::invalid_argument(std::string(s.status().message()));

  PhantomOptions data;
  data.height = data.width = o.size;
  data.num_classes = model_config.num_classes;
  data.seed = o.seed;
  data.count = o.train_images + o.val_images;
  absl::StatusOr<SegmentationSet> all = GeneratePhantoms(data);
  if (!all.ok()) throw std::invalid_argument(std::string(all.status().message()));
  const SegmentationSet train = all->Subset(torch::arange(0, o.train_images));
  const SegmentationSet val = all->Subset(torch::arange(o.train_images, data.count));

  TrainerOptions trainer_options;
  trainer_options.learning_rate = o.learning_rate;
  trainer_options.batch_size = o.batch_size;
  SplitModel model = MakeSplitModel(model_config, *split);
  SiteTrainer site(model.front, model.back, trainer_options);
  LocalBody body(model.body, o.learning_rate);

  std::printf(
      "demo: split U-Net (f=%ld, depth=%ld, split=%s) on %ld phantom images %ldx%ld, "
      "%ld classes, validating on %ld, %d threads\n",
      static_cast<long>(o.base_width), static_cast<long>(o.depth), o.split.c_str(),
      static_cast<long>(o.train_images), static_cast<long>(o.size), static_cast<long>(o.size),
      static_cast<long>(model_config.num_classes), static_cast<long>(o.val_images),
      torch::get_num_threads());
  for (int64_t epoch = 1; epoch <= o.epochs; ++epoch) {
    const EpochStats stats = Unwrap(site.TrainEpoch(train, o.seed * 1000 + epoch, body));
    const ClassScore fg = Unwrap(site.Evaluate(val, body)).scores.MeanForeground();
    std::printf("epoch=%ld loss=%.4f val_dice=%.4f val_iou=%.4f val_hd95=%.2f images_per_s=%.1f\n",
                static_cast<long>(epoch), stats.mean_loss, fg.dice, fg.iou, fg.hd95,
                stats.images / stats.seconds);
    std::fflush(stdout);
  }
}

}  // namespace

void AddDemoCommand(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Train the split U-Net in one process on generated phantoms (prints Dice per epoch)");
  cmd->add_option("--epochs", options->epochs, "Training epochs")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--train-images", options->train_images, "Phantom images to train on")
      ->check(CLI::Range(2, 100000))
      ->capture_default_str();
  cmd->add_option("--val-images", options->val_images, "Phantom images to validate on")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--size", options->size, "Image height and width (a multiple of 2^depth)")
      ->check(CLI::Range(16, 1024))
      ->capture_default_str();
  cmd->add_option("--base-width", options->base_width, "U-Net base width f")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--depth", options->depth, "U-Net down-steps")
      ->check(CLI::Range(1, 6))
      ->capture_default_str();
  cmd->add_option("--batch-size", options->batch_size, "Images per step")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  cmd->add_option("--lr", options->learning_rate, "Adam learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--split", options->split, "Cut: deep, shallow, or FRONT_UNITS,BACK_UNITS")
      ->capture_default_str();
  cmd->add_option("--seed", options->seed, "Seed for data, weights and batch order")
      ->capture_default_str();
  cmd->add_option("--threads", options->threads, "Torch threads (0: one per core)")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd->callback([options] { RunDemo(*options); });
}

}  // namespace splitfed::cli
