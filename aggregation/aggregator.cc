#include "aggregation/aggregator.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace splitfed {

absl::Status ValidateUpdates(const std::vector<SiteUpdate>& updates) {
  if (updates.empty()) return absl::FailedPreconditionError("no site updates to aggregate");
  const SiteUpdate& first = updates.front();
  for (const SiteUpdate& u : updates) {
    if (u.num_images <= 0)
      return absl::InvalidArgumentError(
          absl::StrCat("site ", u.site, ": image count must be positive, got ", u.num_images));
    if (u.state.size() != first.state.size())
      return absl::InvalidArgumentError(absl::StrCat("site ", u.site, ": sent ", u.state.size(),
                                                     " tensors, site ", first.site, " sent ",
                                                     first.state.size()));
    for (const auto& [name, ref] : first.state) {
      auto it = u.state.find(name);
      if (it == u.state.end())
        return absl::InvalidArgumentError(absl::StrCat("site ", u.site, ": lacks '", name, "'"));
      const torch::Tensor& t = it->second;
      if (t.sizes() != ref.sizes() || t.scalar_type() != ref.scalar_type())
        return absl::InvalidArgumentError(
            absl::StrCat("site ", u.site, ": '", name, "' has shape ", c10::str(t.sizes()),
                         ", expected ", c10::str(ref.sizes())));
      if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
        return absl::InvalidArgumentError(
            absl::StrCat("site ", u.site, ": '", name, "' holds NaN or infinite values"));
    }
  }
  return absl::OkStatus();
}

NamedTensors WeightedAverage(const std::vector<SiteUpdate>& updates,
                             const std::vector<double>& weights) {
  NamedTensors out;
  for (const auto& [name, ref] : updates.front().state) {
    if (!ref.is_floating_point()) {
      torch::Tensor largest = ref.clone();
      for (const SiteUpdate& u : updates) largest = torch::maximum(largest, u.state.at(name));
      out[name] = largest;
      continue;
    }
    // Accumulate in float64 so the result does not depend on the order of the sites.
    torch::Tensor sum = torch::zeros(ref.sizes(), torch::kDouble);
    for (size_t k = 0; k < updates.size(); ++k)
      sum.add_(updates[k].state.at(name).to(torch::kDouble), weights[k]);
    out[name] = sum.to(ref.scalar_type());
  }
  return out;
}

absl::StatusOr<NamedTensors> Aggregator::Aggregate(const std::vector<SiteUpdate>& updates) const {
  if (auto s = ValidateUpdates(updates); !s.ok()) return s;
  absl::StatusOr<std::vector<double>> weights = Weights(updates);
  if (!weights.ok()) return weights.status();
  return WeightedAverage(updates, *weights);
}

namespace {

// Scales non-negative raw weights to sum to 1; `rule` names the rule in the error.
absl::StatusOr<std::vector<double>> Normalized(std::vector<double> raw, const char* rule) {
  double total = 0;
  for (double w : raw) total += w;
  if (!(total > 0)) return absl::InvalidArgumentError(absl::StrCat(rule, " weights: total is zero"));
  for (double& w : raw) w /= total;
  return raw;
}

}  // namespace

absl::StatusOr<std::vector<double>> FedAvg::Weights(const std::vector<SiteUpdate>& updates) const {
  std::vector<double> raw;
  for (const SiteUpdate& u : updates) raw.push_back(static_cast<double>(u.num_images));
  return Normalized(std::move(raw), "FedAvg");
}


absl::StatusOr<std::vector<double>> QualityWeighted::Weights(
    const std::vector<SiteUpdate>& updates) const {
  std::vector<double> raw;
  for (const SiteUpdate& u : updates) {
    if (!(u.validation_loss >= 0) || !std::isfinite(u.validation_loss))
      return absl::InvalidArgumentError(absl::StrCat(
          "site ", u.site, ": validation loss ", u.validation_loss, " cannot weigh a site"));
    // A loss of exactly 0 would give an infinite weight: floor it.
    const double quality = 1.0 / std::max(u.validation_loss, 1e-6);
    raw.push_back(static_cast<double>(u.num_images) * std::pow(quality, gamma_));
  }
  return Normalized(std::move(raw), "quality");
}

absl::StatusOr<std::vector<double>> ReliabilityWeighted::Weights(
    const std::vector<SiteUpdate>& updates) const {
  std::vector<double> raw;
  for (const SiteUpdate& u : updates) {
    if (!(u.reliability >= 0 && u.reliability <= 1))
      return absl::InvalidArgumentError(absl::StrCat(
          "site ", u.site, ": reliability ", u.reliability, " is outside [0, 1]"));
    raw.push_back(static_cast<double>(u.num_images) * std::pow(epsilon_ + u.reliability, gamma_));
  }
  return Normalized(std::move(raw), "reliability");
}

namespace {

std::vector<double> Uniform(size_t k) { return std::vector<double>(k, 1.0 / k); }

// Applies `combine` to the stacked (K × …) float64 values of each float entry; integer
// buffers take the largest value, as in WeightedAverage.
template <typename Combine>
absl::StatusOr<NamedTensors> PerCoordinate(const std::vector<SiteUpdate>& updates,
                                           Combine&& combine) {
  if (auto s = ValidateUpdates(updates); !s.ok()) return s;
  NamedTensors out;
  for (const auto& [name, ref] : updates.front().state) {
    std::vector<torch::Tensor> values;
    for (const SiteUpdate& u : updates) values.push_back(u.state.at(name));
    if (!ref.is_floating_point()) {
      out[name] = torch::stack(values).amax(0);
      continue;
    }
    const torch::Tensor sorted = std::get<0>(torch::stack(values).to(torch::kDouble).sort(0));
    out[name] = combine(sorted).to(ref.scalar_type());
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<double>> CoordinateMedian::Weights(
    const std::vector<SiteUpdate>& updates) const {
  return Uniform(updates.size());
}

absl::StatusOr<NamedTensors> CoordinateMedian::Aggregate(
    const std::vector<SiteUpdate>& updates) const {
  return PerCoordinate(updates, [](const torch::Tensor& sorted) {
    const int64_t k = sorted.size(0);
    return k % 2 == 1 ? sorted[k / 2] : (sorted[k / 2 - 1] + sorted[k / 2]) / 2;
  });
}

absl::StatusOr<std::vector<double>> TrimmedMean::Weights(
    const std::vector<SiteUpdate>& updates) const {
  return Uniform(updates.size());
}

absl::StatusOr<NamedTensors> TrimmedMean::Aggregate(const std::vector<SiteUpdate>& updates) const {
  const int64_t k = static_cast<int64_t>(updates.size());
  const int64_t trim = static_cast<int64_t>(std::floor(trim_fraction_ * k));
  return PerCoordinate(updates, [k, trim](const torch::Tensor& sorted) {
    return sorted.narrow(0, trim, k - 2 * trim).mean(0);
  });
}

absl::StatusOr<std::unique_ptr<Aggregator>> MakeAggregator(const std::string& name) {
  if (name == "fedavg") return std::unique_ptr<Aggregator>(new FedAvg());
  if (name == "quality") return std::unique_ptr<Aggregator>(new QualityWeighted());
  if (name == "reliability") return std::unique_ptr<Aggregator>(new ReliabilityWeighted());
  if (name == "median") return std::unique_ptr<Aggregator>(new CoordinateMedian());
  if (name == "trimmed-mean") return std::unique_ptr<Aggregator>(new TrimmedMean());
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown aggregation '", name,
      "' (available: fedavg, quality, reliability, median, trimmed-mean)"));
}

}  // namespace splitfed
