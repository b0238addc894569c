// Writes the starting inputs of every fuzz target into OUT/<target>/: valid messages and
// files of each kind the decoders accept, made by the encoders the product uses. libFuzzer
// grows the committed corpora (fuzz/corpus/) from these; scripts/fuzz.sh says how.
//
//   write_seeds OUT [EXAMPLES_FOLDER]
#include <png.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "coordinator/submission.h"
#include "datasets/png_io.h"
#include "fuzz/framing.h"
#include "proto/method_codec.h"
#include "proto/state_codec.h"
#include "proto/tensor_codec.h"

namespace splitfed::fuzz {
namespace {

namespace fs = std::filesystem;

class SeedFolder {
 public:
  SeedFolder(const fs::path& root, const std::string& target) : dir_(root / target) {
    fs::create_directories(dir_);
  }
  void Write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
  }

 private:
  fs::path dir_;
};

template <typename Status>
void Must(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "write_seeds: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
}

void TensorSeeds(const fs::path& root) {
  SeedFolder out(root, "tensor_codec");
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({2, 3, 4});
  const torch::Tensor rectified = torch::relu(torch::randn({1, 2, 4, 4}));
  v1::Tensor m;
  Must(EncodeTensor(x, WireEncoding::kFp32, &m));
  out.Write("dense-fp32", std::string(1, '\x01') + m.SerializeAsString());
  Must(EncodeTensor(x, WireEncoding::kFp16, &m));
  out.Write("dense-fp16", std::string(1, '\x05') + m.SerializeAsString());
  Must(EncodeTensor(torch::arange(6, torch::kLong).reshape({2, 3}), WireEncoding::kFp32, &m));
  out.Write("dense-int64", std::string(1, '\x02') + m.SerializeAsString());
  Support support;
  Must(EncodeRectified(rectified, WireEncoding::kFp32, &m, &support));
  out.Write("nonzero-fp32", std::string(1, '\x00') + m.SerializeAsString());
  Must(EncodeRectified(rectified, WireEncoding::kFp16, &m, &support));
  out.Write("nonzero-fp16", std::string(1, '\x04') + m.SerializeAsString());
  Must(EncodeTensor(torch::zeros({0, 3}), WireEncoding::kFp32, &m));
  out.Write("empty", std::string(1, '\x00') + m.SerializeAsString());
}

// The stream a site sends through Split for one training step and one evaluation.
void SplitSeeds(const fs::path& root) {
  SeedFolder out(root, "split_stream");
  for (const bool rectified : {false, true}) {
    for (const WireEncoding encoding : {WireEncoding::kFp32, WireEncoding::kFp16}) {
      torch::manual_seed(2);
      SplitStepCodec site(true), body(rectified);
      DecodeLimits limits;
      std::string stream(1, rectified ? '\x01' : '\x00');
      v1::SplitMessage a1;
      a1.set_kind(v1::SplitMessage::ACTIVATION);
      a1.set_round(1);
      const torch::Tensor activation = torch::relu(torch::randn({2, 2, 4, 4}));
      Must(site.EncodeActivation(activation, encoding, true, a1.mutable_tensor()));
      AppendFrame(a1.SerializeAsString(), &stream);
      // What the body answers, so the site's gradient goes on the right support.
      absl::StatusOr<torch::Tensor> received =
          body.DecodeActivation(a1.tensor(), limits, "a1", true);
      Must(received.status());
      v1::Tensor a2;
      Must(body.EncodeActivation(torch::relu(*received), encoding, true, &a2));
      Must(site.DecodeActivation(a2, limits, "a2", true).status());
      v1::SplitMessage g2;
      g2.set_kind(v1::SplitMessage::GRADIENT);
      g2.set_round(1);
      Must(site.EncodeGradient(torch::randn({2, 2, 4, 4}), encoding, g2.mutable_tensor()));
      AppendFrame(g2.SerializeAsString(), &stream);
      v1::SplitMessage eval;
      eval.set_kind(v1::SplitMessage::EVAL);
      eval.set_round(1);
      Must(site.EncodeActivation(activation, encoding, false, eval.mutable_tensor()));
      AppendFrame(eval.SerializeAsString(), &stream);
      out.Write(std::string(rectified ? "rectified-" : "dense-") +
                    (encoding == WireEncoding::kFp16 ? "fp16" : "fp32"),
                stream);
    }
  }
}

std::string StateFrames(int seed) {
  torch::manual_seed(seed);
  std::string frames;
  v1::StateChunk chunk;
  Must(EncodeStateEntry("front.enc0_conv1.conv.weight", torch::randn({4, 1, 3, 3}), &chunk));
  AppendFrame(chunk.SerializeAsString(), &frames);
  Must(EncodeStateEntry("back.head.bias", torch::randn({2}), &chunk));
  AppendFrame(chunk.SerializeAsString(), &frames);
  Must(EncodeStateEntry("front.enc0_conv1.bn.num_batches_tracked",
                        torch::tensor({int64_t{7}}, torch::kLong), &chunk));
  AppendFrame(chunk.SerializeAsString(), &frames);
  return frames;
}

void StateSeeds(const fs::path& root) {
  SeedFolder out(root, "state_codec");
  out.Write("three-entries", StateFrames(3));
}

void UpdateSeeds(const fs::path& root) {
  SeedFolder out(root, "update_stream");
  v1::UpdateChunk scalars;
  v1::UpdateScalars* s = scalars.mutable_scalars();
  s->set_round(2);
  s->set_num_images(16);
  s->set_train_loss(0.7);
  s->set_validation_loss(0.5);
  s->set_validation_dice(0.8);
  s->set_reliability(0.9);
  std::string stream;
  AppendFrame(scalars.SerializeAsString(), &stream);
  out.Write("scalars-only", stream);
  torch::manual_seed(4);
  v1::UpdateChunk entry;
  Must(EncodeStateEntry("front.enc0_conv1.conv.weight", torch::randn({4, 1, 3, 3}),
                        entry.mutable_state()));
  AppendFrame(entry.SerializeAsString(), &stream);
  Must(EncodeStateEntry("back.head.bias", torch::randn({2}), entry.mutable_state()));
  AppendFrame(entry.SerializeAsString(), &stream);
  out.Write("scalars-and-state", stream);
}

void ControlSeeds(const fs::path& root) {
  SeedFolder out(root, "control_requests");
  v1::JoinRequest join;
  join.set_num_images(40);
  out.Write("join", std::string(1, '\x00') + join.SerializeAsString());
  out.Write("wait-round", std::string(1, '\x01') + v1::WaitRoundRequest().SerializeAsString());
  out.Write("heartbeat", std::string(1, '\x02'));
  out.Write("status", std::string(1, '\x03'));
  for (const MethodKind kind : {MethodKind::kSplitFed, MethodKind::kColearning,
                                MethodKind::kFedNoRo, MethodKind::kFedA3I}) {
    SiteRoundMethod method;
    method.options.kind = kind;
    method.warming_up = kind == MethodKind::kColearning;
    method.consistency_weight = 0.5;
    method.distil = kind == MethodKind::kFedNoRo;
    v1::SiteMethod wire;
    EncodeSiteMethod(method, &wire);
    out.Write(std::string("site-method-") + method.options.name(),
              std::string(1, '\x04') + wire.SerializeAsString());
  }
}

void TomlSeeds(const fs::path& root, const fs::path& examples) {
  SeedFolder out(root, "experiment_toml");
  for (const auto& entry : fs::directory_iterator(examples)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".toml" || name == "coordinator.toml" || name == "site.toml")
      continue;
    std::ifstream in(entry.path(), std::ios::binary);
    out.Write(name, std::string(std::istreambuf_iterator<char>(in), {}));
  }
}

// PNG kinds the product's writer does not make (16-bit, palette, grey+alpha, interlaced), so
// that the fuzzer starts inside each of libpng's transforms that DecodePng asks for.
void WriteUnusualPng(const fs::path& path, int bit_depth, int color_type, bool interlaced) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (!file || !png || !info || setjmp(png_jmpbuf(png))) {
    std::fprintf(stderr, "write_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
  const int width = 5, height = 4;
  png_init_io(png, file);
  png_set_IHDR(png, info, width, height, bit_depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_color palette[3] = {{0, 0, 0}, {200, 10, 10}, {10, 200, 10}};
  png_byte alpha[3] = {255, 128, 0};
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_PLTE(png, info, palette, 3);
    png_set_tRNS(png, info, alpha, 3, nullptr);
  }
  png_write_info(png, info);
  const int channels = color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  std::vector<png_byte> row(width * channels * 2);
  for (int y = 0; y < height; ++y) {
    for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<png_byte>((y + i) % 3);
    if (interlaced) {
      std::vector<png_bytep> rows(height, row.data());
      png_write_image(png, rows.data());
      break;
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(file);
}

void PngSeeds(const fs::path& root) {
  SeedFolder out(root, "png");
  const fs::path tmp = fs::temp_directory_path() / "splitfed-seed.png";
  // The target's first byte: even, the rest is a file; odd, parameters of a PNG it makes.
  auto file_bytes = [&] {
    std::ifstream in(tmp, std::ios::binary);
    return std::string(1, '\0') + std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::vector<uint8_t> grey(6 * 5);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = static_cast<uint8_t>(i % 3);
  Must(WriteGreyPng8(tmp.string(), grey, 6, 5));
  out.Write("mask-grey8", file_bytes());
  std::vector<uint8_t> rgb(4 * 4 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 17);
  Must(WriteRgbPng8(tmp.string(), rgb, 4, 4));
  out.Write("image-rgb8", file_bytes());
  WriteUnusualPng(tmp, 16, PNG_COLOR_TYPE_GRAY, false);
  out.Write("grey16", file_bytes());
  WriteUnusualPng(tmp, 8, PNG_COLOR_TYPE_PALETTE, false);
  out.Write("palette-with-alpha", file_bytes());
  WriteUnusualPng(tmp, 8, PNG_COLOR_TYPE_GRAY_ALPHA, false);
  out.Write("grey-alpha8", file_bytes());
  WriteUnusualPng(tmp, 2, PNG_COLOR_TYPE_GRAY, true);
  out.Write("grey2-interlaced", file_bytes());
  fs::remove(tmp);
  // Made by the target: width, height, format (index), interlace and tRNS bits, flip offset
  // (2 bytes, past the end: no flip), flip mask, pixel bytes.
  for (int format = 0; format < 15; ++format) {
    const std::string made = {'\x01', '\x07', '\x05', static_cast<char>(format),
                              static_cast<char>(format % 4), '\xff', '\xff', '\x00',
                              '\x10', '\x80', '\x33'};
    out.Write("made-format" + std::to_string(format), made);
  }
}

}  // namespace
}  // namespace splitfed::fuzz

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: write_seeds OUT [EXAMPLES_FOLDER]\n");
    return 2;
  }
  namespace fz = splitfed::fuzz;
  const std::filesystem::path out(argv[1]);
  fz::TensorSeeds(out);
  fz::SplitSeeds(out);
  fz::StateSeeds(out);
  fz::UpdateSeeds(out);
  fz::ControlSeeds(out);
  if (argc > 2) fz::TomlSeeds(out, argv[2]);
  fz::PngSeeds(out);
  std::printf("seeds written to %s\n", argv[1]);
  return 0;
}
