#include "datasets/png_io.h"

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace splitfed {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// libpng reports errors through longjmp; the message is kept here so it can be returned.
struct ErrorSink {
  std::string message;
};

void OnPngError(png_structp png, png_const_charp message) {
  auto* sink = static_cast<ErrorSink*>(png_get_error_ptr(png));
  if (sink) sink->message = message;
  png_longjmp(png, 1);
}
void OnPngWarning(png_structp, png_const_charp) {}

// Feeds libpng from a byte string; running past its end is a libpng error (longjmp).
struct MemoryReader {
  const std::string* bytes;
  size_t offset;
};

void ReadFromMemory(png_structp png, png_bytep out, png_size_t length) {
  auto* reader = static_cast<MemoryReader*>(png_get_io_ptr(png));
  if (length > reader->bytes->size() - reader->offset) png_error(png, "file is truncated");
  std::memcpy(out, reader->bytes->data() + reader->offset, length);
  reader->offset += length;
}

}  // namespace

absl::StatusOr<PngPixels> ReadPng(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open for reading"));
  std::string bytes;
  char chunk[1 << 16];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof(chunk), file.get())) > 0) bytes.append(chunk, n);
  if (std::ferror(file.get()))
    return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return DecodePng(bytes, path);
}

absl::StatusOr<PngPixels> DecodePng(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0)
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a PNG file"));
  MemoryReader reader{&bytes, 8};

  ErrorSink sink;
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &sink, OnPngError, OnPngWarning);
  if (!png) return absl::ResourceExhaustedError("libpng: cannot allocate a reader");
  png_infop info = png_create_info_struct(png);
  PngPixels out;
  std::vector<png_bytep> rows;
  std::vector<uint8_t> buffer;
  // Nothing with a destructor may be created between setjmp and the end of decoding.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": corrupt or unsupported PNG (", sink.message, ")"));
  }
  png_set_read_fn(png, &reader, ReadFromMemory);
  png_set_sig_bytes(png, 8);
  // A header may claim any size; these bounds keep a hostile file from allocating gigabytes.
  png_set_user_limits(png, kMaxPngSide, kMaxPngSide);
  png_set_chunk_malloc_max(png, 64 << 20);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8)
    png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (png_get_bit_depth(png, info) == 16) png_set_swap(png);  // host (little-endian) order
  png_read_update_info(png, info);

  out.width = png_get_image_width(png, info);
  out.height = png_get_image_height(png, info);
  out.channels = png_get_channels(png, info);
  out.bit_depth = png_get_bit_depth(png, info);
  if (out.width * out.height * out.channels > kMaxPngValues) {
    png_destroy_read_struct(&png, &info, nullptr);
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", out.width, "x", out.height, "x",
                                                   out.channels, " is larger than ",
                                                   kMaxPngValues, " values"));
  }
  const size_t row_bytes = png_get_rowbytes(png, info);
  buffer.resize(row_bytes * out.height);
  rows.resize(out.height);
  for (int64_t y = 0; y < out.height; ++y) rows[y] = buffer.data() + y * row_bytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);

  const size_t count = static_cast<size_t>(out.width * out.height * out.channels);
  out.values.resize(count);
  if (out.bit_depth == 16) {
    const auto* src = reinterpret_cast<const uint16_t*>(buffer.data());
    for (int64_t y = 0; y < out.height; ++y)
      for (int64_t i = 0; i < out.width * out.channels; ++i)
        out.values[y * out.width * out.channels + i] = src[y * row_bytes / 2 + i];
  } else {
    for (int64_t y = 0; y < out.height; ++y)
      for (int64_t i = 0; i < out.width * out.channels; ++i)
        out.values[y * out.width * out.channels + i] = buffer[y * row_bytes + i];
  }
  return out;
}

namespace {

absl::Status WritePng8(const std::string& path, const std::vector<uint8_t>& pixels,
                       int64_t width, int64_t height, int channels) {
  if (width <= 0 || height <= 0 ||
      static_cast<int64_t>(pixels.size()) != width * height * channels)
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", pixels.size(),
                                                   " values do not make a ", width, "x",
                                                   height, "x", channels, " image"));
  File file(std::fopen(path.c_str(), "wb"));
  if (!file) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  ErrorSink sink;
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, OnPngError, OnPngWarning);
  if (!png) return absl::ResourceExhaustedError("libpng: cannot allocate a writer");
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows(height);
  for (int64_t y = 0; y < height; ++y)
    rows[y] = const_cast<png_bytep>(pixels.data() + y * width * channels);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(absl::StrCat(path, ": writing PNG failed (", sink.message, ")"));
  }
  png_init_io(png, file.get());
  png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fflush(file.get()) != 0)
    return absl::InternalError(absl::StrCat(path, ": write failed (disk full?)"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteGreyPng8(const std::string& path, const std::vector<uint8_t>& pixels,
                           int64_t width, int64_t height) {
  return WritePng8(path, pixels, width, height, 1);
}

absl::Status WriteRgbPng8(const std::string& path, const std::vector<uint8_t>& pixels,
                          int64_t width, int64_t height) {
  return WritePng8(path, pixels, width, height, 3);
}

}  // namespace splitfed
