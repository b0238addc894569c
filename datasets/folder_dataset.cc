#include "datasets/folder_dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "datasets/png_io.h"
#include "status/status_macros.h"

namespace splitfed {
namespace fs = std::filesystem;

absl::StatusOr<torch::Tensor> PngToImageTensor(const PngPixels& png, int64_t channels,
                                               const std::string& path) {
  const double scale = png.bit_depth == 16 ? 65535.0 : 255.0;
  torch::Tensor t = torch::tensor(std::vector<float>(png.values.begin(), png.values.end()))
                        .view({png.height, png.width, png.channels})
                        .permute({2, 0, 1})
                        .div(scale);
  // Drop alpha: it says nothing about tissue.
  const int64_t colour = png.channels == 2 || png.channels == 4 ? png.channels - 1 : png.channels;
  t = t.slice(0, 0, colour);
  if (colour == channels) return t.contiguous();
  if (channels == 1) {  // ITU-R BT.601 luma
    return (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).unsqueeze(0);
  }
  if (channels == 3 && colour == 1) return t.expand({3, png.height, png.width}).contiguous();
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": has ", colour, " colour channels, cannot make ", channels));
}

namespace {

absl::StatusOr<torch::Tensor> MaskTensor(const PngPixels& png, int64_t num_classes,
                                         const std::string& path) {
  const int64_t pixels = png.height * png.width;
  const int stride = png.channels;
  const int colour = png.channels == 2 || png.channels == 4 ? png.channels - 1 : png.channels;
  std::vector<int64_t> labels(pixels);
  for (int64_t i = 0; i < pixels; ++i) {
    const uint16_t v = png.values[i * stride];
    for (int c = 1; c < colour; ++c)
      if (png.values[i * stride + c] != v)
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": colour mask with unequal channels at pixel (", i % png.width, ", ",
            i / png.width, "); a mask must hold one class index per pixel"));
    if (v >= num_classes)
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": class value ", v, " at pixel (", i % png.width, ", ", i / png.width,
          ") is out of range; this dataset has ", num_classes, " classes (0..",
          num_classes - 1, ")"));
    labels[i] = v;
  }
  return torch::tensor(labels).view({png.height, png.width});
}

}  // namespace

absl::Status FolderDatasetOptions::Validate() const {
  if (root.empty()) return absl::InvalidArgumentError("dataset root folder is not set");
  if (height < 8 || width < 8 || height > 4096 || width > 4096)
    return absl::InvalidArgumentError(
        absl::StrCat("dataset image size must be within 8..4096, got ", height, "x", width));
  if (channels != 1 && channels != 3)
    return absl::InvalidArgumentError(
        absl::StrCat("dataset channels must be 1 or 3, got ", channels));
  if (num_classes < 2 || num_classes > 256)
    return absl::InvalidArgumentError(
        absl::StrCat("dataset num_classes must be in [2, 256], got ", num_classes));
  return absl::OkStatus();
}

absl::StatusOr<SegmentationSet> LoadFolderDataset(const FolderDatasetOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  const fs::path image_dir = fs::path(o.root) / "images";
  const fs::path mask_dir = fs::path(o.root) / o.masks_dir;
  std::error_code ec;
  if (!fs::is_directory(image_dir, ec))
    return absl::NotFoundError(absl::StrCat(image_dir.string(), ": no such folder (a dataset "
                                            "folder holds images/ and masks/)"));
  if (!fs::is_directory(mask_dir, ec))
    return absl::NotFoundError(absl::StrCat(mask_dir.string(), ": no such mask folder"));

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(image_dir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".png")
      files.push_back(entry.path());
  if (ec) return absl::UnavailableError(absl::StrCat(image_dir.string(), ": ", ec.message()));
  if (files.empty())
    return absl::NotFoundError(absl::StrCat(image_dir.string(), ": holds no .png images"));
  std::sort(files.begin(), files.end());

  const int64_t n = static_cast<int64_t>(files.size());
  SegmentationSet set;
  set.num_classes = o.num_classes;
  set.images = torch::empty({n, o.channels, o.height, o.width});
  set.masks = torch::empty({n, o.height, o.width}, torch::kLong);
  namespace F = torch::nn::functional;
  const std::vector<int64_t> size = {o.height, o.width};
  for (int64_t i = 0; i < n; ++i) {
    const std::string image_path = files[i].string();
    const std::string mask_path = (mask_dir / files[i].filename()).string();
    if (!fs::exists(mask_path))
      return absl::NotFoundError(
          absl::StrCat(image_path, ": has no mask (expected ", mask_path, ")"));
    ASSIGN_OR_RETURN(PngPixels image_png, ReadPng(image_path));
    ASSIGN_OR_RETURN(PngPixels mask_png, ReadPng(mask_path));
    if (image_png.width != mask_png.width || image_png.height != mask_png.height)
      return absl::InvalidArgumentError(absl::StrCat(mask_path, ": is ", mask_png.width, "x",
                                                     mask_png.height, " but its image is ",
                                                     image_png.width, "x", image_png.height));
    ASSIGN_OR_RETURN(torch::Tensor image, PngToImageTensor(image_png, o.channels, image_path));
    ASSIGN_OR_RETURN(torch::Tensor mask, MaskTensor(mask_png, o.num_classes, mask_path));
    set.images[i].copy_(F::interpolate(
        image.unsqueeze(0),
        F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false))[0]);
    set.masks[i].copy_(
        F::interpolate(mask.view({1, 1, mask.size(0), mask.size(1)}).to(torch::kFloat),
                       F::InterpolateFuncOptions().size(size).mode(torch::kNearest))
            .view({o.height, o.width})
            .to(torch::kLong));
    set.names.push_back(files[i].stem().string());
  }
  if (o.standardize) set.images = StandardizePerImage(set.images);
  return set;
}

}  // namespace splitfed
