// Segmentation metrics per class: Dice, IoU and HD95, with the conventions of
// docs/ALGORITHM.md §6. Torch-free, so its tests start fast.
#pragma once

#include <cstdint>
#include <vector>

namespace splitfed {

// A label image: row-major class indices.
struct LabelView {
  const int64_t* labels;
  int64_t height;
  int64_t width;
};

struct ClassScore {
  double dice = 0.0;
  double iou = 0.0;
  double hd95 = 0.0;  // pixels
};

// Scores class `c` of `pred` against `truth` (same size).
//   both empty: Dice = IoU = 1, HD95 = 0;  exactly one empty: Dice = IoU = 0, HD95 = diagonal.
ClassScore ScoreClass(const LabelView& pred, const LabelView& truth, int64_t c);

// Scores every class 0..num_classes-1 (index 0 is background).
std::vector<ClassScore> ScoreImage(const LabelView& pred, const LabelView& truth,
                                   int64_t num_classes);

// 95th percentile (linear interpolation between order statistics) of the pooled distances
// from each boundary pixel of one mask to the nearest boundary pixel of the other, both ways.
// Masks are 0/1 bytes, row-major; both must be non-empty.
double Hd95(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int64_t height,
            int64_t width);

// Exact Euclidean distance (in pixels) from every pixel to the nearest pixel whose `features`
// byte is non-zero (Felzenszwalb & Huttenlocher's separable transform); +inf if there is none.
std::vector<double> DistanceToFeatures(const std::vector<uint8_t>& features, int64_t height,
                                       int64_t width);

// Averages scores over images, per class; "foreground" means classes 1..C-1.
class ScoreAccumulator {
 public:
  explicit ScoreAccumulator(int64_t num_classes);
  void Add(const std::vector<ClassScore>& image_scores);
  int64_t count() const { return count_; }
  int64_t num_classes() const { return num_classes_; }
  ClassScore MeanOfClass(int64_t c) const;
  ClassScore MeanForeground() const;

 private:
  int64_t num_classes_;
  int64_t count_ = 0;
  std::vector<ClassScore> sums_;
};

}  // namespace splitfed
