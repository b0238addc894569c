// A PNG file as the folder datasets load images and masks. libpng is not instrumented, so
// random bytes rarely get past its signature and CRC checks; half the inputs are therefore
// turned into a valid PNG first (any size up to 64 x 64, every colour type and bit depth,
// interlaced or not, a palette with transparency), with one byte then flipped, so that every
// transform DecodePng asks of libpng and its error paths are reached.
//   byte 0 even: the rest is the file.
//   byte 0 odd:  width, height, format, interlace, flip offset (2 bytes), flip mask, pixels...
#include <png.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/png_io.h"

namespace {

struct Format {
  int color_type, bit_depth;
};
constexpr Format kFormats[] = {
    {PNG_COLOR_TYPE_GRAY, 1},       {PNG_COLOR_TYPE_GRAY, 2},       {PNG_COLOR_TYPE_GRAY, 4},
    {PNG_COLOR_TYPE_GRAY, 8},       {PNG_COLOR_TYPE_GRAY, 16},      {PNG_COLOR_TYPE_RGB, 8},
    {PNG_COLOR_TYPE_RGB, 16},       {PNG_COLOR_TYPE_PALETTE, 1},    {PNG_COLOR_TYPE_PALETTE, 2},
    {PNG_COLOR_TYPE_PALETTE, 4},    {PNG_COLOR_TYPE_PALETTE, 8},    {PNG_COLOR_TYPE_GRAY_ALPHA, 8},
    {PNG_COLOR_TYPE_GRAY_ALPHA, 16}, {PNG_COLOR_TYPE_RGB_ALPHA, 8}, {PNG_COLOR_TYPE_RGB_ALPHA, 16},
};

void Append(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), length);
}
void Flush(png_structp) {}

// A valid PNG from the parameters and pixel bytes; empty if libpng refuses.
std::string MakePng(const uint8_t* p, size_t size) {
  if (size < 7) return {};
  const int width = 1 + p[0] % 64, height = 1 + p[1] % 64;
  const Format f = kFormats[p[2] % (sizeof(kFormats) / sizeof(kFormats[0]))];
  const bool interlaced = p[3] & 1;
  const uint8_t* pixels = p + 7;
  const size_t available = size - 7;
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const int channels = f.color_type == PNG_COLOR_TYPE_RGB         ? 3
                       : f.color_type == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
                       : f.color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                                   : 1;
  const size_t row_bytes = (static_cast<size_t>(width) * channels * f.bit_depth + 7) / 8;
  std::vector<png_byte> image(row_bytes * height);
  for (size_t i = 0; i < image.size(); ++i) image[i] = available ? pixels[i % available] : 0;
  std::vector<png_bytep> rows(height);
  for (int y = 0; y < height; ++y) rows[y] = image.data() + y * row_bytes;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return {};
  }
  png_set_write_fn(png, &out, Append, Flush);
  png_set_IHDR(png, info, width, height, f.bit_depth, f.color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_color palette[256];
  png_byte alpha[256];
  for (int i = 0; i < 256; ++i) {
    palette[i] = {static_cast<png_byte>(i), static_cast<png_byte>(255 - i),
                  static_cast<png_byte>(i * 7)};
    alpha[i] = static_cast<png_byte>(i * 3);
  }
  if (f.color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_PLTE(png, info, palette, 1 << f.bit_depth);
    if (p[3] & 2) png_set_tRNS(png, info, alpha, 1 << f.bit_depth, nullptr);
  }
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const size_t flip_at = p[4] | (size_t{p[5]} << 8);
  if (flip_at < out.size()) out[flip_at] = static_cast<char>(out[flip_at] ^ p[6]);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string file = (data[0] & 1)
                               ? MakePng(data + 1, size - 1)
                               : std::string(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)splitfed::DecodePng(file, "fuzzed.png");
  return 0;
}
