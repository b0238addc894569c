#include "aggregation/aggregator.h"

#include <torch/torch.h>

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

absl::StatusOr<std::vector<double>> FedAvg::Weights(const std::vector<SiteUpdate>& updates) const {
  double total = 0;
  for (const SiteUpdate& u : updates) total += static_cast<double>(u.num_images);
  if (total <= 0) return absl::InvalidArgumentError("FedAvg: total image count is zero");
  std::vector<double> weights;
  for (const SiteUpdate& u : updates) weights.push_back(u.num_images / total);
  return weights;
}

absl::StatusOr<std::unique_ptr<Aggregator>> MakeAggregator(const std::string& name) {
  if (name == "fedavg") return std::unique_ptr<Aggregator>(new FedAvg());
  return absl::InvalidArgumentError(
      absl::StrCat("unknown aggregation '", name, "' (available: fedavg)"));
}

}  // namespace splitfed
