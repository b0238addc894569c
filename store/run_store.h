// The coordinator's durable record: runs, rounds, sites and per-round metrics, in an embedded
// SQLite database. Torch-free. Thread-safe: one connection behind a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

struct sqlite3;

namespace splitfed {

struct RunRecord {
  int64_t id = 0;
  std::string name;
  std::string status;  // "running", "finished", "failed", "stopped"
  std::string config_json;
  std::string started_at;  // UTC, ISO 8601
  std::string finished_at;
  int64_t resumed = 0;  // how many times a coordinator took the run up again after it stopped
};

struct RoundRecord {
  int64_t run_id = 0;
  int64_t round = 0;
  std::string state;  // "training", "completed", "retried"
  int64_t attempt = 1;
  std::string checkpoint_path;
  std::string started_at;
  std::string finished_at;
  // A completed round's resume point: the coordinator's state file, its SHA-256, and the
  // scalar state beside it (JSON). Empty for other rounds and for runs without checkpoints.
  std::string resume_path;
  std::string resume_sha256;
  std::string resume_json;
};

struct SiteRecord {
  int64_t run_id = 0;
  std::string name;
  bool connected = false;
  int64_t images = 0;
  std::string first_seen;
  std::string last_seen;
};

// One site's numbers for one round. Optional values are NULL in the database.
struct SiteRoundMetrics {
  int64_t run_id = 0;
  int64_t round = 0;
  std::string site;
  bool included = true;  // false when the site failed or timed out and was left out
  std::optional<double> train_loss;
  std::optional<double> validation_dice;
  std::optional<double> validation_loss;     // on the site's own validation masks
  std::optional<double> reliability;         // q_k
  std::optional<double> aggregation_weight;  // a_k
  int64_t bytes_in = 0;                      // coordinator received from the site
  int64_t bytes_out = 0;                     // coordinator sent to the site
  std::string note;                          // why a site was left out
};

// What closing a round writes, all in one transaction: each participant's row, the round's
// state ("completed" or "retried") with its model file and resume point.
struct RoundClosing {
  int64_t run_id = 0;
  int64_t round = 0;
  std::string state;
  std::string checkpoint_path;
  std::string resume_path;
  std::string resume_sha256;
  std::string resume_json;
  std::vector<SiteRoundMetrics> sites;
};

// The seconds from one store timestamp to another ("YYYY-MM-DDTHH:MM:SS.sssZ", UTC, as the
// store writes them); INVALID_ARGUMENT for text that is not one.
absl::StatusOr<double> SecondsBetween(const std::string& from, const std::string& to);

class RunStore {
 public:
  // Opens (creating if needed) the database at `path`; ":memory:" for a private one.
  static absl::StatusOr<std::unique_ptr<RunStore>> Open(const std::string& path);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  absl::StatusOr<int64_t> CreateRun(const std::string& name, const std::string& config_json);
  absl::Status FinishRun(int64_t run_id, const std::string& status);
  // The newest run called `name`, if any.
  absl::StatusOr<std::optional<RunRecord>> LatestRun(const std::string& name);
  // A stopped or crashed run is taken up again: "running" once more, its resume count + 1.
  absl::Status ResumeRun(int64_t run_id);

  // A round starts (or restarts, incrementing its attempt) and later completes or is retried.
  absl::Status StartRound(int64_t run_id, int64_t round);
  absl::Status FinishRound(int64_t run_id, int64_t round, const std::string& state,
                           const std::string& checkpoint_path);

  // Records that a site was seen now, with its image count and connection state.
  absl::Status TouchSite(int64_t run_id, const std::string& site, int64_t images, bool connected);
  absl::Status RecordSiteMetrics(const SiteRoundMetrics& metrics);  // replaces (run, round, site)
  // Either everything of `closing` is written or nothing is (a crash in between leaves the
  // round as it was: "training").
  absl::Status CloseRound(const RoundClosing& closing);

  absl::StatusOr<std::vector<RunRecord>> Runs();
  absl::StatusOr<std::vector<RoundRecord>> Rounds(int64_t run_id);
  absl::StatusOr<std::vector<SiteRecord>> Sites(int64_t run_id);
  absl::StatusOr<std::vector<SiteRoundMetrics>> Metrics(int64_t run_id);

 private:
  RunStore(sqlite3* db, std::string path);
  absl::Status Exec(const std::string& sql);
  absl::Status AddMissingColumns();
  // The writes behind the public calls, with `mutex_` held.
  absl::Status RecordSiteMetricsLocked(const SiteRoundMetrics& metrics);
  absl::Status FinishRoundLocked(const RoundClosing& closing);

  sqlite3* db_;
  std::string path_;
  std::mutex mutex_;
};

}  // namespace splitfed
