// Metrics on hand-made masks whose scores are known exactly.
#include <gtest/gtest.h>

#include <cmath>

#include "metrics/segmentation_metrics.h"

namespace splitfed {
namespace {

struct Labels {
  int64_t h, w;
  std::vector<int64_t> data;
  Labels(int64_t h_, int64_t w_) : h(h_), w(w_), data(h_ * w_, 0) {}
  void Fill(int64_t y0, int64_t x0, int64_t y1, int64_t x1, int64_t c) {  // [y0,y1) × [x0,x1)
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = x0; x < x1; ++x) data[y * w + x] = c;
  }
  LabelView view() const { return {data.data(), h, w}; }
};

TEST(Metrics, IdenticalMasksScorePerfect) {
  Labels a(16, 16);
  a.Fill(2, 2, 10, 12, 1);
  const ClassScore s = ScoreClass(a.view(), a.view(), 1);
  EXPECT_DOUBLE_EQ(s.dice, 1.0);
  EXPECT_DOUBLE_EQ(s.iou, 1.0);
  EXPECT_DOUBLE_EQ(s.hd95, 0.0);
}

TEST(Metrics, BothEmptyIsPerfectAndOneEmptyIsWorst) {
  Labels empty(10, 20), full(10, 20);
  full.Fill(3, 3, 6, 6, 2);
  const ClassScore both = ScoreClass(empty.view(), empty.view(), 2);
  EXPECT_DOUBLE_EQ(both.dice, 1.0);
  EXPECT_DOUBLE_EQ(both.iou, 1.0);
  EXPECT_DOUBLE_EQ(both.hd95, 0.0);
  const double diagonal = std::sqrt(10.0 * 10.0 + 20.0 * 20.0);
  for (const ClassScore& s :
       {ScoreClass(empty.view(), full.view(), 2), ScoreClass(full.view(), empty.view(), 2)}) {
    EXPECT_DOUBLE_EQ(s.dice, 0.0);
    EXPECT_DOUBLE_EQ(s.iou, 0.0);
    EXPECT_DOUBLE_EQ(s.hd95, diagonal);
  }
}

TEST(Metrics, DiceAndIouOfOverlappingRectangles) {
  // P: 4×4 = 16 px; G: 4×6 = 24 px; overlap 4×4 = 16 px.
  Labels p(12, 12), g(12, 12);
  p.Fill(0, 0, 4, 4, 1);
  g.Fill(0, 0, 4, 6, 1);
  const ClassScore s = ScoreClass(p.view(), g.view(), 1);
  EXPECT_DOUBLE_EQ(s.dice, 2.0 * 16 / (16 + 24));
  EXPECT_DOUBLE_EQ(s.iou, 16.0 / 24.0);
  // Background: P has 128 px, G 120 px, overlap 120 px.
  const ClassScore bg = ScoreClass(p.view(), g.view(), 0);
  EXPECT_DOUBLE_EQ(bg.dice, 2.0 * 120 / (128 + 120));
}

// A square shifted by k pixels: the largest boundary distance is k, and more than 5 % of the
// pooled distances equal k (the side edges), so the 95th percentile is exactly k.
class ShiftedSquare : public ::testing::TestWithParam<int> {};

TEST_P(ShiftedSquare, Hd95EqualsShift) {
  const int k = GetParam();
  Labels p(64, 64), g(64, 64), v(64, 64);
  p.Fill(10, 10, 30, 30, 1);
  g.Fill(10, 10 + k, 30, 30 + k, 1);  // shifted right
  v.Fill(10 + k, 10, 30 + k, 30, 1);  // shifted down
  EXPECT_DOUBLE_EQ(ScoreClass(p.view(), g.view(), 1).hd95, k);
  EXPECT_DOUBLE_EQ(ScoreClass(g.view(), p.view(), 1).hd95, k);
  EXPECT_DOUBLE_EQ(ScoreClass(p.view(), v.view(), 1).hd95, k);
}

INSTANTIATE_TEST_SUITE_P(Shifts, ShiftedSquare, ::testing::Values(1, 2, 3, 5, 8));

TEST(Metrics, Hd95UsesEuclideanDistance) {
  // Two single pixels 3 right and 4 down: every boundary distance is 5.
  Labels p(20, 20), g(20, 20);
  p.Fill(2, 2, 3, 3, 1);
  g.Fill(6, 5, 7, 6, 1);
  EXPECT_DOUBLE_EQ(ScoreClass(p.view(), g.view(), 1).hd95, 5.0);
}

TEST(Metrics, Hd95InterpolatesBetweenOrderStatistics) {
  // P: one pixel at (0,0). G: pixels at (0,0) and (0,10). Boundary distances pooled:
  // P→G: 0; G→P: 0 and 10. Sorted [0, 0, 10]; 95th percentile at rank 1.9 → 0 + 0.9·10 = 9.
  Labels p(4, 16), g(4, 16);
  p.Fill(0, 0, 1, 1, 1);
  g.Fill(0, 0, 1, 1, 1);
  g.Fill(0, 10, 1, 11, 1);
  EXPECT_NEAR(ScoreClass(p.view(), g.view(), 1).hd95, 9.0, 1e-12);
}

TEST(Metrics, AccumulatorAveragesForegroundOnly) {
  ScoreAccumulator acc(3);
  acc.Add({{1.0, 1.0, 0.0}, {0.5, 0.25, 2.0}, {1.0, 1.0, 0.0}});
  acc.Add({{0.0, 0.0, 9.0}, {0.7, 0.35, 4.0}, {0.0, 0.0, 6.0}});
  EXPECT_EQ(acc.count(), 2);
  EXPECT_DOUBLE_EQ(acc.MeanOfClass(1).dice, 0.6);
  EXPECT_DOUBLE_EQ(acc.MeanOfClass(1).hd95, 3.0);
  const ClassScore fg = acc.MeanForeground();  // classes 1 and 2 only
  EXPECT_DOUBLE_EQ(fg.dice, (0.6 + 0.5) / 2);
  EXPECT_DOUBLE_EQ(fg.iou, (0.3 + 0.5) / 2);
  EXPECT_DOUBLE_EQ(fg.hd95, (3.0 + 3.0) / 2);
}

TEST(Metrics, MismatchedSizesAreRejected) {
  Labels a(4, 4), b(4, 5);
  EXPECT_THROW(ScoreClass(a.view(), b.view(), 0), std::invalid_argument);
}

}  // namespace
}  // namespace splitfed
