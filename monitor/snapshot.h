// What the coordinator shows of itself to administrators, at one moment: the run, its rounds
// and each site. Plain data (torch-free): the coordinator fills it, /metrics and the dashboard
// render it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace splitfed {

struct SiteSnapshot {
  std::string name;
  bool joined = false;     // has joined this run (since the coordinator started)
  bool connected = false;
  std::optional<double> last_seen_age_seconds;  // unset: not heard from yet
  int64_t images = 0;
  int64_t bytes_received_total = 0;  // coordinator ← site, over the run
  int64_t bytes_sent_total = 0;      // coordinator → site
  int64_t rounds_included = 0;
  int64_t failures_total = 0;        // rounds it was left out of (stream broken, refused, late)
  // From the last round it submitted.
  std::optional<double> train_loss, validation_dice, reliability, aggregation_weight;
};

// One completed round, for the dashboard's plots.
struct RoundPoint {
  int64_t round = 0;
  double duration_seconds = 0;  // 0 when not measured (rounds before a resume)
  int64_t sites_included = 0;
  double mean_validation_dice = 0;  // over the included sites
  double mean_train_loss = 0;
  int64_t bytes = 0;  // both directions, all sites
};

struct MonitorSnapshot {
  int64_t run_id = 0;
  std::string run_name, method, mode;
  // waiting (for sites to open a round) | training | finished | stopped | failed
  std::string state = "waiting";
  int64_t current_round = 0;  // 0 between rounds
  int64_t rounds_planned = 0;
  int64_t rounds_completed = 0;
  int64_t resumes = 0;  // how many times this run was taken up after a restart
  int64_t stale_updates_total = 0;
  double round_duration_seconds_sum = 0;  // over the rounds this coordinator completed
  int64_t round_duration_count = 0;
  int64_t sites_enrolled = 0;
  std::vector<SiteSnapshot> sites;  // every enrolled site, by name
  std::vector<RoundPoint> history;  // completed rounds, in order
};

// The run states /metrics enumerates, in that order.
inline const std::vector<std::string>& RunStates() {
  static const std::vector<std::string> states = {"waiting", "training", "finished", "stopped",
                                                  "failed"};
  return states;
}

}  // namespace splitfed
