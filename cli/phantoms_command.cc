// `splitfed phantoms`: writes generated phantoms as a folder dataset (images/ and masks/), to
// look at them or to feed them back through the folder loader.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "datasets/phantom.h"
#include "datasets/png_io.h"

namespace splitfed::cli {
namespace {

struct PhantomsCommandOptions {
  std::string out;
  PhantomOptions phantom;
};

void WritePhantoms(const PhantomsCommandOptions& o) {
  PhantomOptions options = o.phantom;
  options.standardize = false;  // keep [0, 1] so the PNGs look like scans
  absl::StatusOr<SegmentationSet> set = GeneratePhantoms(options);
  if (!set.ok()) throw std::invalid_argument(std::string(set.status().message()));
  namespace fs = std::filesystem;
  for (const char* sub : {"images", "masks"}) fs::create_directories(fs::path(o.out) / sub);
  const int64_t h = options.height, w = options.width;
  for (int64_t i = 0; i < set->size(); ++i) {
    const torch::Tensor image =
        (set->images[i][0] * 255.0).round().clamp(0, 255).to(torch::kByte).contiguous();
    const torch::Tensor mask = set->masks[i].to(torch::kByte).contiguous();
    const std::string name = set->names[i] + ".png";
    for (const auto& [sub, t] : {std::pair{"images", image}, std::pair{"masks", mask}}) {
      const uint8_t* p = t.data_ptr<uint8_t>();
      const absl::Status s = WriteGreyPng8((fs::path(o.out) / sub / name).string(),
                                           std::vector<uint8_t>(p, p + h * w), w, h);
      if (!s.ok()) throw std::runtime_error(std::string(s.message()));
    }
  }
  std::printf("wrote %ld phantom images and masks (%ld classes) to %s\n",
              static_cast<long>(set->size()), static_cast<long>(options.num_classes),
              o.out.c_str());
}

}  // namespace

void AddPhantomsCommand(CLI::App& app) {
  auto o = std::make_shared<PhantomsCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "phantoms", "Write generated phantom scans as a folder dataset (images/, masks/)");
  cmd->add_option("--out", o->out, "Output folder")->required();
  cmd->add_option("--count", o->phantom.count, "Number of images")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--size", o->phantom.height, "Height and width in pixels")
      ->check(CLI::Range(16, 2048))
      ->capture_default_str();
  cmd->add_option("--classes", o->phantom.num_classes, "Classes including background (2..6)")
      ->check(CLI::Range(2, 6))
      ->capture_default_str();
  cmd->add_option("--seed", o->phantom.seed, "Seed")->capture_default_str();
  cmd->add_option("--gamma", o->phantom.appearance.gamma, "Scanner gamma")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--contrast", o->phantom.appearance.contrast, "Scanner contrast")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--blur", o->phantom.appearance.blur_sigma, "Scanner blur sigma (pixels)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->callback([o] {
    o->phantom.width = o->phantom.height;
    WritePhantoms(*o);
  });
}

}  // namespace splitfed::cli
