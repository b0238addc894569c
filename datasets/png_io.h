// Reading and writing PNG files through libpng. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace splitfed {

// Decoded pixels, row-major, channels interleaved; values as stored (0..255 or 0..65535).
struct PngPixels {
  int64_t width = 0;
  int64_t height = 0;
  int channels = 0;   // 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (palettes expand to RGB[A])
  int bit_depth = 0;  // 8 or 16 (1/2/4-bit grey is expanded to 8)
  std::vector<uint16_t> values;
};

// The largest image a PNG may declare: each side, and width x height x channels in total.
constexpr int64_t kMaxPngSide = 32768;
constexpr int64_t kMaxPngValues = int64_t{1} << 28;

// Errors name the file and say what is wrong with it.
absl::StatusOr<PngPixels> ReadPng(const std::string& path);
// The same from the file's bytes; `name` is used in errors.
absl::StatusOr<PngPixels> DecodePng(const std::string& bytes, const std::string& name);

// Writes an 8-bit single-channel PNG (e.g. a mask of class indices).
absl::Status WriteGreyPng8(const std::string& path, const std::vector<uint8_t>& pixels,
                           int64_t width, int64_t height);

// Writes an 8-bit RGB PNG; `pixels` holds R, G, B per pixel, row by row.
absl::Status WriteRgbPng8(const std::string& path, const std::vector<uint8_t>& pixels,
                          int64_t width, int64_t height);

}  // namespace splitfed
