#include "coordinator/round_recorder.h"

#include <glog/logging.h>

#include "status/status_macros.h"

namespace splitfed {

absl::StatusOr<RoundRecorder> RoundRecorder::Create(RunStore* store, const std::string& run_name,
                                                    const std::string& settings_json) {
  RoundRecorder r;
  if (!store) return r;
  r.store_ = store;
  ASSIGN_OR_RETURN(r.run_id_, store->CreateRun(run_name, settings_json));
  return r;
}

absl::StatusOr<RoundRecorder> RoundRecorder::Resume(RunStore* store, int64_t run_id) {
  RoundRecorder r;
  r.store_ = store;
  r.run_id_ = run_id;
  RETURN_IF_ERROR(store->ResumeRun(run_id));
  return r;
}

void RoundRecorder::SiteSeen(const std::string& site, int64_t images, bool connected) {
  if (!store_) return;
  if (absl::Status s = store_->TouchSite(run_id_, site, images, connected); !s.ok())
    LOG(WARNING) << "event=store_error what=site_seen site=" << site << " reason=\""
                 << s.message() << "\"";
}

absl::Status RoundRecorder::RoundStarted(int64_t round) {
  if (!store_) return absl::OkStatus();
  return store_->StartRound(run_id_, round);
}

absl::Status RoundRecorder::RoundClosed(RoundClosing closing, bool completed) {
  if (!store_) return absl::OkStatus();
  closing.run_id = run_id_;
  closing.state = completed ? "completed" : "retried";
  for (SiteRoundMetrics& m : closing.sites) m.run_id = run_id_;
  return store_->CloseRound(closing);
}

absl::Status RoundRecorder::RunFinished() {
  return store_ ? store_->FinishRun(run_id_, "finished") : absl::OkStatus();
}

absl::Status RoundRecorder::RunStopped() {
  return store_ ? store_->FinishRun(run_id_, "stopped") : absl::OkStatus();
}

absl::Status RoundRecorder::RunFailed(const absl::Status& why) {
  if (!store_) return why;
  if (absl::Status s = store_->FinishRun(run_id_, "failed"); !s.ok())
    LOG(WARNING) << "event=store_error what=run_failed reason=\"" << s.message() << "\"";
  return why;
}

}  // namespace splitfed
