// `splitfed segment`: applies a trained model file to a folder of PNG images and writes one
// mask PNG (class indices, the input's size) per image.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "datasets/folder_dataset.h"
#include "datasets/png_io.h"
#include "datasets/segmentation_set.h"
#include "split/model_file.h"
#include "split/split_step.h"

namespace splitfed::cli {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

struct SegmentFlags {
  std::string model, input, output;
};

void RunSegment(const SegmentFlags& f) {
  absl::StatusOr<ModelFile> file = LoadModelFile(f.model);
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  if (file->config.num_classes > 256)
    throw std::runtime_error("more than 256 classes do not fit an 8-bit mask");
  fs::path input = f.input;
  if (fs::is_directory(input / "images")) input /= "images";
  std::vector<fs::path> images;
  for (const auto& e : fs::directory_iterator(input))
    if (e.is_regular_file() && e.path().extension() == ".png") images.push_back(e.path());
  std::sort(images.begin(), images.end());
  if (images.empty()) throw std::runtime_error(input.string() + ": holds no .png images");
  fs::create_directories(f.output);
  file->model.front->eval();
  file->model.body->eval();
  file->model.back->eval();
  const int64_t c = file->config.in_channels;
  for (const fs::path& path : images) {
    absl::StatusOr<PngPixels> png = ReadPng(path.string());
    if (!png.ok()) throw std::runtime_error(std::string(png.status().message()));
    absl::StatusOr<torch::Tensor> t = PngToImageTensor(*png, c, path.string());
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    const torch::Tensor x = StandardizePerImage(F::interpolate(
        t->unsqueeze(0),
        F::InterpolateFuncOptions()
            .size(std::vector<int64_t>{file->image_height, file->image_width})
            .mode(torch::kBilinear)
            .align_corners(false)));
    const torch::Tensor logits = SplitInference(file->model, x);
    // Back to the image's own size: resize the class scores, then take the argmax.
    const torch::Tensor mask =
        F::interpolate(logits, F::InterpolateFuncOptions()
                                   .size(std::vector<int64_t>{png->height, png->width})
                                   .mode(torch::kBilinear)
                                   .align_corners(false))
            .argmax(1)[0]
            .to(torch::kByte)
            .contiguous();
    const uint8_t* p = mask.data_ptr<uint8_t>();
    const absl::Status s =
        WriteGreyPng8((fs::path(f.output) / path.filename()).string(),
                      std::vector<uint8_t>(p, p + mask.numel()), png->width, png->height);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  }
  std::printf("segment: wrote %zu masks (class indices 0..%ld) to %s\n", images.size(),
              static_cast<long>(file->config.num_classes - 1), f.output.c_str());
}

}  // namespace

void AddSegmentCommand(CLI::App& app) {
  auto f = std::make_shared<SegmentFlags>();
  CLI::App* cmd = app.add_subcommand("segment", "Write a mask PNG for every image in a folder");
  cmd->add_option("--model", f->model, "Model file (e.g. checkpoints/final.pt)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--input", f->input, "Folder of PNG images (or a dataset with images/)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--output", f->output, "Folder for the masks")->required();
  cmd->callback([f] { RunSegment(*f); });
}

}  // namespace splitfed::cli
