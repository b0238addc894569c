// Phantoms, PNG folders and the real BU-BIL data in ../shared/data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "datasets/folder_dataset.h"
#include "datasets/phantom.h"
#include "datasets/png_io.h"
#include "tests/refusal.h"

namespace splitfed {
namespace {

using test_refusal::Refused;
namespace fs = std::filesystem;

PhantomOptions SmallPhantoms() {
  PhantomOptions o;
  o.count = 12;
  o.height = 48;
  o.width = 64;
  o.seed = 11;
  return o;
}

TEST(Phantoms, SameSeedSameImagesAndALargerCountExtendsTheSet) {
  const SegmentationSet a = *GeneratePhantoms(SmallPhantoms());
  const SegmentationSet b = *GeneratePhantoms(SmallPhantoms());
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_TRUE(torch::equal(a.masks, b.masks));
  PhantomOptions more = SmallPhantoms();
  more.count = 20;
  const SegmentationSet c = *GeneratePhantoms(more);
  EXPECT_TRUE(torch::equal(c.masks.slice(0, 0, 12), a.masks));
  PhantomOptions other = SmallPhantoms();
  other.seed = 12;
  EXPECT_FALSE(torch::equal(GeneratePhantoms(other)->masks, a.masks));
}

TEST(Phantoms, EveryStructureAppearsAndShapesVary) {
  PhantomOptions o = SmallPhantoms();
  o.count = 40;
  const SegmentationSet set = *GeneratePhantoms(o);
  EXPECT_EQ(set.images.sizes(), (std::vector<int64_t>{40, 1, 48, 64}));
  EXPECT_EQ(set.masks.sizes(), (std::vector<int64_t>{40, 48, 64}));
  EXPECT_EQ(set.masks.min().item<int64_t>(), 0);
  EXPECT_EQ(set.masks.max().item<int64_t>(), 3);
  // Each class is present in most images, and its area varies between images.
  for (int64_t c = 1; c < 4; ++c) {
    const torch::Tensor area = (set.masks == c).sum({1, 2}).to(torch::kFloat);
    EXPECT_GE((area > 0).sum().item<int64_t>(), 30) << "class " << c;
    EXPECT_GT(area.std().item<double>(), 0.1 * area.mean().item<double>()) << "class " << c;
  }
  // Structures differ in intensity from their surroundings (the task is learnable).
  PhantomOptions raw = o;
  raw.standardize = false;
  raw.noise_sigma = 0;
  const SegmentationSet clean = *GeneratePhantoms(raw);
  const torch::Tensor img = clean.images.squeeze(1);
  const double organ = img.masked_select(clean.masks == 2).mean().item<double>();
  const double background = img.masked_select(clean.masks == 0).mean().item<double>();
  EXPECT_GT(organ - background, 0.3);
}

TEST(Phantoms, AppearanceShiftChangesIntensitiesNotMasks) {
  PhantomOptions plain = SmallPhantoms();
  plain.standardize = false;
  PhantomOptions scanner = plain;
  scanner.appearance.gamma = 1.8;
  scanner.appearance.contrast = 0.7;
  scanner.appearance.blur_sigma = 1.2;
  const SegmentationSet a = *GeneratePhantoms(plain);
  const SegmentationSet b = *GeneratePhantoms(scanner);
  EXPECT_TRUE(torch::equal(a.masks, b.masks));
  EXPECT_GT((a.images - b.images).abs().mean().item<double>(), 0.02);
  EXPECT_LT(b.images.mean().item<double>(), a.images.mean().item<double>()) << "gamma > 1 darkens";
}

TEST(Phantoms, InvalidOptionsAreErrors) {
  PhantomOptions o = SmallPhantoms();
  o.num_classes = 9;
  EXPECT_NE(GeneratePhantoms(o).status().message().find("num_classes"), std::string::npos);
  o = SmallPhantoms();
  o.appearance.gamma = 0;
  EXPECT_TRUE(Refused(GeneratePhantoms(o), absl::StatusCode::kInvalidArgument, "must be >= 0"));
}

class FolderDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("splitfed_folder_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "images");
    fs::create_directories(root_ / "masks");
  }
  void TearDown() override { fs::remove_all(root_); }

  void WriteGrey(const fs::path& path, int64_t w, int64_t h, uint8_t fill) {
    ASSERT_TRUE(WriteGreyPng8(path.string(), std::vector<uint8_t>(w * h, fill), w, h).ok());
  }
  FolderDatasetOptions Options() const {
    FolderDatasetOptions o;
    o.root = root_.string();
    o.height = o.width = 16;
    o.num_classes = 3;
    return o;
  }
  fs::path root_;
};

TEST_F(FolderDatasetTest, LoadsResizesAndKeepsClassValues) {
  // An 8×8 image whose left half is class 2: after nearest resizing to 16×16 still half.
  std::vector<uint8_t> mask(64, 0), image(64, 10);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 4; ++x) mask[y * 8 + x] = 2, image[y * 8 + x] = 200;
  ASSERT_TRUE(WriteGreyPng8((root_ / "images/a.png").string(), image, 8, 8).ok());
  ASSERT_TRUE(WriteGreyPng8((root_ / "masks/a.png").string(), mask, 8, 8).ok());
  WriteGrey(root_ / "images/b.png", 20, 10, 50);
  WriteGrey(root_ / "masks/b.png", 20, 10, 1);
  const SegmentationSet set = *LoadFolderDataset(Options());
  ASSERT_EQ(set.size(), 2);
  EXPECT_EQ(set.names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(set.images.sizes(), (std::vector<int64_t>{2, 1, 16, 16}));
  EXPECT_EQ((set.masks[0] == 2).sum().item<int64_t>(), 128);
  EXPECT_EQ((set.masks[1] == 1).sum().item<int64_t>(), 256);
  // Standardised: zero mean, unit std per image; bright where the mask is 2.
  EXPECT_NEAR(set.images[0].mean().item<double>(), 0.0, 1e-5);
  EXPECT_GT(set.images[0][0][0][0].item<float>(), 0.5f);
}

TEST_F(FolderDatasetTest, MissingMaskNamesTheImage) {
  WriteGrey(root_ / "images/lonely.png", 8, 8, 1);
  const auto set = LoadFolderDataset(Options());
  ASSERT_TRUE(Refused(set, absl::StatusCode::kNotFound));
  EXPECT_NE(set.status().message().find("lonely.png: has no mask"), std::string::npos)
      << set.status();
}

TEST_F(FolderDatasetTest, SizeMismatchNamesTheMask) {
  WriteGrey(root_ / "images/a.png", 8, 8, 1);
  WriteGrey(root_ / "masks/a.png", 8, 9, 1);
  const auto set = LoadFolderDataset(Options());
  ASSERT_TRUE(Refused(set, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(set.status().message().find("masks/a.png: is 8x9 but its image is 8x8"),
            std::string::npos)
      << set.status();
}

TEST_F(FolderDatasetTest, OutOfRangeClassNamesFileAndValue) {
  WriteGrey(root_ / "images/a.png", 8, 8, 1);
  WriteGrey(root_ / "masks/a.png", 8, 8, 7);
  const auto set = LoadFolderDataset(Options());
  ASSERT_TRUE(Refused(set, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(set.status().message().find("masks/a.png: class value 7"), std::string::npos)
      << set.status();
}

TEST_F(FolderDatasetTest, CorruptPngNamesTheFile) {
  WriteGrey(root_ / "images/a.png", 8, 8, 1);
  WriteGrey(root_ / "masks/a.png", 8, 8, 1);
  {  // keep the signature, cut the rest
    std::ifstream in(root_ / "images/a.png", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out(root_ / "images/a.png", std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, 30);
  }
  auto set = LoadFolderDataset(Options());
  ASSERT_TRUE(Refused(set, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(set.status().message().find("images/a.png: corrupt or unsupported PNG"),
            std::string::npos)
      << set.status();
  std::ofstream(root_ / "images/a.png", std::ios::trunc) << "not an image";
  set = LoadFolderDataset(Options());
  EXPECT_NE(set.status().message().find("images/a.png: not a PNG file"), std::string::npos)
      << set.status();
}

TEST_F(FolderDatasetTest, MissingFoldersAndBadOptionsAreErrors) {
  FolderDatasetOptions o = Options();
  o.root = (root_ / "nowhere").string();
  EXPECT_EQ(LoadFolderDataset(o).status().code(), absl::StatusCode::kNotFound);
  o = Options();
  EXPECT_NE(LoadFolderDataset(o).status().message().find("holds no .png images"),
            std::string::npos);
  o.channels = 2;
  EXPECT_NE(LoadFolderDataset(o).status().message().find("channels"), std::string::npos);
}

// Real data: BU-BIL fluorescence, beside the checkout in ../shared/data (CI has it).
fs::path SharedData() {
  if (const char* env = std::getenv("SPLITFED_SHARED_DATA")) return env;
  return fs::path(SPLITFED_SOURCE_DIR) / ".." / "shared" / "data";
}

TEST(RealData, BubilFluorescenceGoldAndOneAnnotator) {
  const fs::path root = SharedData() / "bubil-fluorescence";
  if (!fs::is_directory(root)) {
    // Only a checkout without ../shared lacks it; CI always has it.
    GTEST_SKIP() << root << " is not present";
  }
  FolderDatasetOptions o;
  o.root = root.string();
  o.height = o.width = 64;
  o.num_classes = 2;
  const SegmentationSet gold = *LoadFolderDataset(o);
  EXPECT_EQ(gold.size(), 119);
  EXPECT_EQ(gold.masks.min().item<int64_t>(), 0);
  EXPECT_EQ(gold.masks.max().item<int64_t>(), 1);
  const double cell_fraction = gold.masks.to(torch::kFloat).mean().item<double>();
  EXPECT_GT(cell_fraction, 0.05);
  EXPECT_LT(cell_fraction, 0.95);

  o.masks_dir = "annotators/expert1";
  const SegmentationSet expert = *LoadFolderDataset(o);
  EXPECT_EQ(expert.size(), 119);
  EXPECT_EQ(expert.names, gold.names);
  EXPECT_TRUE(torch::equal(expert.images, gold.images));
  // An expert agrees with the gold standard closely but not perfectly.
  const torch::Tensor both = (expert.masks == 1) & (gold.masks == 1);
  const double dice = 2.0 * both.sum().item<double>() /
                      ((expert.masks == 1).sum() + (gold.masks == 1).sum()).item<double>();
  EXPECT_GT(dice, 0.9);
  EXPECT_LT(dice, 1.0);
}

}  // namespace
}  // namespace splitfed
