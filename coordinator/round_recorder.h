// What the run store learns from the coordinator, with one policy for its failures. The run's
// history (the run, each round, each site's metrics per round) must be written: a failure
// there fails the run. A site's liveness ("connected", "last seen", for `splitfed status`) is
// best effort: a failure there is logged and the run goes on. Without a store (tests,
// benchmarks) every call does nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/run_store.h"

namespace splitfed {

class RoundRecorder {
 public:
  RoundRecorder() = default;  // no store
  // Opens the run's row; `settings_json` is what `splitfed status` shows of its options.
  static absl::StatusOr<RoundRecorder> Create(RunStore* store, const std::string& run_name,
                                              const std::string& settings_json);
  // Takes up run `run_id` again (a restarted coordinator): it is "running" once more and
  // counts one more resume.
  static absl::StatusOr<RoundRecorder> Resume(RunStore* store, int64_t run_id);

  int64_t run_id() const { return run_id_; }

  void SiteSeen(const std::string& site, int64_t images, bool connected);
  absl::Status RoundStarted(int64_t round);
  // Each participant's row, the round's state ("completed" or "retried"), its model file and
  // resume point, in one transaction. `closing`'s run id and state are filled in here.
  absl::Status RoundClosed(RoundClosing closing, bool completed);
  absl::Status RunFinished();
  absl::Status RunStopped();
  // The run ends on `why`; recording that is tried, and `why` is returned whatever the store
  // says (a store error is logged beside it).
  absl::Status RunFailed(const absl::Status& why);

 private:
  RunStore* store_ = nullptr;
  int64_t run_id_ = 0;
};

}  // namespace splitfed
