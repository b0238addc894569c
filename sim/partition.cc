#include "sim/partition.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace splitfed::sim {
namespace {

// Deals `order` into `sites` contiguous blocks whose sizes differ by at most one.
Partition Deal(const std::vector<int64_t>& order, int64_t sites) {
  Partition out(sites);
  const int64_t n = static_cast<int64_t>(order.size());
  for (int64_t k = 0, begin = 0; k < sites; ++k) {
    const int64_t end = begin + n / sites + (k < n % sites ? 1 : 0);
    out[k].assign(order.begin() + begin, order.begin() + end);
    begin = end;
  }
  return out;
}

}  // namespace

absl::StatusOr<PartitionKind> ParsePartitionKind(const std::string& name) {
  if (name == "iid") return PartitionKind::kIid;
  if (name == "quantity") return PartitionKind::kQuantity;
  if (name == "class") return PartitionKind::kClass;
  if (name == "appearance") return PartitionKind::kAppearance;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown partition '", name, "'; expected iid, quantity, class or appearance"));
}

const char* PartitionKindName(PartitionKind kind) {
  switch (kind) {
    case PartitionKind::kIid: return "iid";
    case PartitionKind::kQuantity: return "quantity";
    case PartitionKind::kClass: return "class";
    case PartitionKind::kAppearance: return "appearance";
  }
  return "?";
}

Partition IidPartition(int64_t n, int64_t sites, std::mt19937_64& rng) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return Deal(order, sites);
}

absl::StatusOr<Partition> QuantitySkewPartition(int64_t n, int64_t sites, double alpha,
                                                int64_t min_per_site, std::mt19937_64& rng) {
  if (!(alpha > 0)) return absl::InvalidArgumentError("partition alpha must be positive");
  if (min_per_site * sites > n)
    return absl::InvalidArgumentError(absl::StrCat(
        n, " images cannot give ", sites, " sites at least ", min_per_site, " each"));
  // Dirichlet(α) as normalised Gamma(α, 1) draws.
  std::vector<double> share(sites);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  for (double& s : share) s = gamma(rng) + 1e-12;
  const double total = std::accumulate(share.begin(), share.end(), 0.0);
  // Each site gets its minimum, then the rest by share (largest remainders last).
  const int64_t spare = n - min_per_site * sites;
  std::vector<int64_t> counts(sites, min_per_site);
  int64_t given = 0;
  std::vector<std::pair<double, int64_t>> remainders;
  for (int64_t k = 0; k < sites; ++k) {
    const double exact = spare * share[k] / total;
    counts[k] += static_cast<int64_t>(exact);
    given += static_cast<int64_t>(exact);
    remainders.push_back({exact - std::floor(exact), k});
  }
  std::sort(remainders.rbegin(), remainders.rend());
  for (int64_t i = 0; given < spare; ++i, ++given) ++counts[remainders[i % sites].second];
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  Partition out(sites);
  for (int64_t k = 0, begin = 0; k < sites; begin += counts[k], ++k)
    out[k].assign(order.begin() + begin, order.begin() + begin + counts[k]);
  return out;
}

Partition ClassSkewPartition(const std::vector<int64_t>& dominant_class,
                             const std::vector<int64_t>& area, int64_t sites) {
  std::vector<int64_t> order(dominant_class.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::pair{dominant_class[a], area[a]} < std::pair{dominant_class[b], area[b]};
  });
  return Deal(order, sites);
}

}  // namespace splitfed::sim
