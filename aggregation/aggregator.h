// Combining the sites' model parts into the global model at the end of a round.
// An Aggregator sees only what the sites sent (their parts' state, n_k and a few scalars).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "split/model_state.h"

namespace splitfed {

struct SiteUpdate {
  std::string site;
  int64_t num_images = 0;    // n_k
  double reliability = 1.0;  // q_k in [0, 1], reported by reliability-aware methods
  double validation_loss = 0.0;
  NamedTensors state;        // the parts this aggregation covers (front+back, or a body)
  double boundary_noise = 0.0;  // FedA3I: share of boundary-band pixels unlike the teacher's
  bool flagged_noisy = false;   // FedNoRo: the coordinator judged the site's labels noisy
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  virtual std::string name() const = 0;

  // The weight a_k of each update (summing to 1), for rules that are weighted averages.
  virtual absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const = 0;

  // The combined state. Default: Σ_k a_k · state_k for float tensors; integer buffers (such
  // as BatchNorm's num_batches_tracked counter) take the largest value.
  virtual absl::StatusOr<NamedTensors> Aggregate(const std::vector<SiteUpdate>& updates) const;
};

// Checks that there is at least one update, that every update has the same entries with the
// same shapes and dtypes, n_k > 0, and that every float value is finite. The error names the
// site and the entry.
absl::Status ValidateUpdates(const std::vector<SiteUpdate>& updates);

// Weighted sum of states with the given weights (the updates must be valid).
NamedTensors WeightedAverage(const std::vector<SiteUpdate>& updates,
                             const std::vector<double>& weights);

// FedAvg: a_k = n_k / Σ_j n_j.
class FedAvg : public Aggregator {
 public:
  std::string name() const override { return "fedavg"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;
};

// QA-SplitFed's quality weighting [ours: the rule is not published]: a site's quality is
// the inverse of its validation loss, Q_k = 1 / L_k, and a_k ∝ n_k · Q_k^γ (γ = 2).
class QualityWeighted : public Aggregator {
 public:
  explicit QualityWeighted(double gamma = 2.0) : gamma_(gamma) {}
  std::string name() const override { return "quality"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;

 private:
  double gamma_;
};

// SplitFed-CL's reliability-aware weighting [ours, docs/ALGORITHM.md §8]: a_k ∝ n_k·(ε + q_k)^γ
// with q_k the share of images the site judged reliable (ε = 0.05, γ = 1). ε keeps a site
// whose masks all look unreliable in the average, with a small weight.
class ReliabilityWeighted : public Aggregator {
 public:
  explicit ReliabilityWeighted(double epsilon = 0.05, double gamma = 1.0)
      : epsilon_(epsilon), gamma_(gamma) {}
  std::string name() const override { return "reliability"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;

 private:
  double epsilon_, gamma_;
};

// Coordinate-wise median of the sites' tensors (the mean of the two middle values when the
// number of sites is even), unweighted. Weights() reports 1/K for each site.
class CoordinateMedian : public Aggregator {
 public:
  std::string name() const override { return "median"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;
  absl::StatusOr<NamedTensors> Aggregate(const std::vector<SiteUpdate>& updates) const override;
};

// Coordinate-wise trimmed mean: per coordinate, the floor(β·K) largest and the floor(β·K)
// smallest values are dropped and the rest averaged, unweighted (β = 0.2). Weights()
// reports 1/K for each site.
class TrimmedMean : public Aggregator {
 public:
  explicit TrimmedMean(double trim_fraction = 0.2) : trim_fraction_(trim_fraction) {}
  std::string name() const override { return "trimmed-mean"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;
  absl::StatusOr<NamedTensors> Aggregate(const std::vector<SiteUpdate>& updates) const override;

 private:
  double trim_fraction_;
};

// FedNoRo's distance-aware weighting [ours: reconstruction, docs/ALGORITHM.md §10]: a site
// flagged noisy gets a_k ∝ n_k·exp(−d_k), with d_k its L2 distance to the nearest clean site's
// parameters divided by the largest such distance among the noisy sites (so d_k ∈ (0, 1]);
// clean sites have d_k = 0. With no site flagged, or every site flagged, this is FedAvg.
class DistanceAware : public Aggregator {
 public:
  std::string name() const override { return "distance"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;
};

// FedA3I's layer-wise blend [ours: reconstruction, docs/ALGORITHM.md §10]: each entry's weight
// is (1 − λ)·quantity_k + λ·quality_k, with λ the entry's depth in the network (0 at the first
// unit, 1 at the head), quantity_k = n_k / Σ n and quality_k ∝ n_k / (ε + b_k) from the site's
// boundary noise b_k (ε = 0.05). `unit_order` lists the U-Net's unit names in forward order;
// an entry's unit is the first name component after an optional "front."/"back." prefix
// (unknown names count as deepest). Weights() reports the quality weights.
class LayerwiseQuality : public Aggregator {
 public:
  explicit LayerwiseQuality(std::vector<std::string> unit_order, double epsilon = 0.05)
      : unit_order_(std::move(unit_order)), epsilon_(epsilon) {}
  std::string name() const override { return "layerwise-quality"; }
  absl::StatusOr<std::vector<double>> Weights(
      const std::vector<SiteUpdate>& updates) const override;
  absl::StatusOr<NamedTensors> Aggregate(const std::vector<SiteUpdate>& updates) const override;
  // λ of one state entry.
  double Depth(const std::string& entry) const;

 private:
  std::vector<std::string> unit_order_;
  double epsilon_;
};

// Looks an aggregation rule up by name: "fedavg", "quality", "reliability", "median",
// "trimmed-mean", "distance", "layerwise-quality" (which needs the model's unit order).
absl::StatusOr<std::unique_ptr<Aggregator>> MakeAggregator(
    const std::string& name, const std::vector<std::string>& unit_order = {});

}  // namespace splitfed
