#include "aggregation/aggregator.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "status/status_macros.h"

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
  RETURN_IF_ERROR(ValidateUpdates(updates));
  ASSIGN_OR_RETURN(std::vector<double> weights, Weights(updates));
  return WeightedAverage(updates, weights);
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
  RETURN_IF_ERROR(ValidateUpdates(updates));
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

absl::StatusOr<std::vector<double>> DistanceAware::Weights(
    const std::vector<SiteUpdate>& updates) const {
  std::vector<size_t> clean, noisy;
  for (size_t k = 0; k < updates.size(); ++k) (updates[k].flagged_noisy ? noisy : clean).push_back(k);
  if (clean.empty() || noisy.empty()) return FedAvg().Weights(updates);
  RETURN_IF_ERROR(ValidateUpdates(updates));
  auto distance = [&](const SiteUpdate& a, const SiteUpdate& b) {
    double sum = 0;
    for (const auto& [name, t] : a.state)
      if (t.is_floating_point())
        sum += (t.to(torch::kDouble) - b.state.at(name).to(torch::kDouble)).pow(2).sum().item<double>();
    return std::sqrt(sum);
  };
  std::vector<double> d(updates.size(), 0.0);
  double largest = 0;
  for (size_t k : noisy) {
    double nearest = std::numeric_limits<double>::infinity();
    for (size_t j : clean) nearest = std::min(nearest, distance(updates[k], updates[j]));
    d[k] = nearest;
    largest = std::max(largest, nearest);
  }
  std::vector<double> raw;
  for (size_t k = 0; k < updates.size(); ++k)
    raw.push_back(static_cast<double>(updates[k].num_images) *
                  std::exp(largest > 0 ? -d[k] / largest : 0.0));
  return Normalized(std::move(raw), "distance");
}

double LayerwiseQuality::Depth(const std::string& entry) const {
  std::string name = entry;
  for (const char* prefix : {kFrontPrefix, kBackPrefix})
    if (name.rfind(prefix, 0) == 0) name = name.substr(std::string(prefix).size());
  name = name.substr(0, name.find('.'));
  for (size_t i = 0; i < unit_order_.size(); ++i)
    if (unit_order_[i] == name)
      return unit_order_.size() > 1 ? static_cast<double>(i) / (unit_order_.size() - 1) : 1.0;
  return 1.0;
}

absl::StatusOr<std::vector<double>> LayerwiseQuality::Weights(
    const std::vector<SiteUpdate>& updates) const {
  std::vector<double> raw;
  for (const SiteUpdate& u : updates) {
    if (!(u.boundary_noise >= 0 && u.boundary_noise <= 1))
      return absl::InvalidArgumentError(absl::StrCat(
          "site ", u.site, ": boundary noise ", u.boundary_noise, " is outside [0, 1]"));
    raw.push_back(static_cast<double>(u.num_images) / (epsilon_ + u.boundary_noise));
  }
  return Normalized(std::move(raw), "layerwise-quality");
}

absl::StatusOr<NamedTensors> LayerwiseQuality::Aggregate(
    const std::vector<SiteUpdate>& updates) const {
  RETURN_IF_ERROR(ValidateUpdates(updates));
  ASSIGN_OR_RETURN(std::vector<double> quality, Weights(updates));
  ASSIGN_OR_RETURN(std::vector<double> quantity, FedAvg().Weights(updates));
  NamedTensors out;
  for (const auto& [name, ref] : updates.front().state) {
    const double lambda = Depth(name);
    std::vector<double> w;
    for (size_t k = 0; k < updates.size(); ++k)
      w.push_back((1 - lambda) * quantity[k] + lambda * quality[k]);
    std::vector<SiteUpdate> one_entry;
    for (const SiteUpdate& u : updates)
      one_entry.push_back({u.site, u.num_images, 0, 0, {{name, u.state.at(name)}}});
    out[name] = WeightedAverage(one_entry, w).at(name);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Aggregator>> MakeAggregator(
    const std::string& name, const std::vector<std::string>& unit_order) {
  if (name == "fedavg") return std::unique_ptr<Aggregator>(new FedAvg());
  if (name == "quality") return std::unique_ptr<Aggregator>(new QualityWeighted());
  if (name == "reliability") return std::unique_ptr<Aggregator>(new ReliabilityWeighted());
  if (name == "median") return std::unique_ptr<Aggregator>(new CoordinateMedian());
  if (name == "trimmed-mean") return std::unique_ptr<Aggregator>(new TrimmedMean());
  if (name == "distance") return std::unique_ptr<Aggregator>(new DistanceAware());
  if (name == "layerwise-quality") return std::unique_ptr<Aggregator>(new LayerwiseQuality(unit_order));
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown aggregation '", name,
      "' (available: fedavg, quality, reliability, median, trimmed-mean, distance, "
      "layerwise-quality)"));
}

}  // namespace splitfed
