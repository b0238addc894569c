// The coordinator's core: the global model, one body per site (SFLV1), round control and
// aggregation. Transport-free: the gRPC services in services.h call into it, and a test can
// too. Identity (the site name) is decided by the caller from the mTLS certificate.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "aggregation/aggregator.h"
#include "colearning/method.h"
#include "coordinator/checkpointer.h"
#include "coordinator/round_recorder.h"
#include "coordinator/submission.h"
#include "monitor/snapshot.h"
#include "proto/tensor_codec.h"
#include "split/model_state.h"
#include "split/trainer.h"
#include "split/unet.h"
#include "store/run_store.h"

namespace splitfed {

// How the coordinator holds the body (ALGORITHM.md §2): SFLV1 trains one body copy per site in
// parallel and averages them; SFLV2 keeps one body that the sites train one after another, in
// a random order each round, and only the client parts are averaged.
enum class SplitMode { kV1, kV2 };
absl::StatusOr<SplitMode> ParseSplitMode(const std::string& text);  // "sflv1" | "sflv2"
const char* SplitModeName(SplitMode mode);

struct RunOptions {
  std::string run_name = "run";
  SplitMode mode = SplitMode::kV1;
  int64_t rounds = 5;
  int64_t min_sites = 1;
  int64_t local_epochs = 1;
  int64_t batch_size = 8;
  double learning_rate = 1e-3;
  double round_deadline_seconds = 600;
  // Once min_sites are waiting, how long to wait for the other enrolled sites before opening
  // the round without them (a site a moment late should not miss a whole round).
  double round_open_wait_seconds = 2;
  WireEncoding activation_encoding = WireEncoding::kFp32;
  UNetConfig model;
  SplitSpec split = SplitSpec::Deep();
  int64_t image_size = 64;
  uint64_t seed = 1;
  MethodOptions method;     // splitfed (plain), splitfed-cl, fednoro, feda3i
  std::string aggregation;  // empty: the method's default rule
  std::vector<std::string> enrolled_sites;
  std::string checkpoint_dir;  // empty: no checkpoints (and a run that cannot be resumed)
  bool checkpoint_every_round = true;  // false: only final.pt
  // Take up the newest run called run_name in the store if it did not finish (a restarted
  // coordinator), from its last completed round; false always starts a new run.
  bool resume = false;
  // Write each completed round's resume file (checkpointer.h). The simulator turns it off: it
  // reruns an interrupted run whole, so the files would only cost time and disk.
  bool write_resume_state = true;

  absl::Status Validate() const;
  // The options that decide what the run computes, by their coordinator.toml names, as a
  // JSON object (the run store keeps it; a resumed run must match it). Not among them: the
  // number of rounds (a run may be extended), the sites, min_sites and the deadlines.
  std::string SettingsJson() const;
  std::string AggregationRule() const {
    return aggregation.empty() ? method.DefaultAggregation() : aggregation;
  }
};

// What a site receives when a round opens for it.
struct RoundTicket {
  bool finished = false;  // the run is over
  int64_t round = 0;
  int64_t deadline_unix_ms = 0;
  uint64_t shuffle_seed = 0;
  // Global front and back, prefixed "front." / "back.", and SplitFed-CL's trainable loss
  // weights as "loss.log_variances" when the method learns them.
  NamedTensors client_state;
  bool warming_up = false;  // a teacher method's warm-up round
  double consistency_weight = 0;  // SplitFed-CL's w_c for this round
  bool distil = false;      // FedNoRo: the site was flagged noisy
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const RunOptions& options,
                                                              RunStore* store);
  ~Coordinator();

  const RunOptions& options() const { return options_; }
  int64_t run_id() const { return recorder_.run_id(); }
  // Whether this coordinator took up an unfinished run, and from which completed round.
  bool resumed() const { return resumed_; }
  int64_t resumed_after_round() const { return resumed_after_round_; }
  ActivationShapes cut_shapes() const { return shapes_; }

  // A site joins (or rejoins). Refused if its name is not enrolled. `num_images` may be 0
  // when the site has not loaded its data yet (it reports n_k with each update). The counts
  // bound what the body does for the site in a round (BodyWorkBudget).
  absl::Status Join(const std::string& site, int64_t num_images,
                    int64_t num_validation_images = 0);
  // A site asking for its round, without blocking (the server parks the call and asks again
  // on every WaitForChange): marks `site` as waiting and returns its ticket (or the finished
  // ticket), or nullopt if no round is open for it yet. A site that gives up waiting calls
  // StopWaiting.
  absl::StatusOr<std::optional<RoundTicket>> PollRound(const std::string& site);
  void StopWaiting(const std::string& site);
  // Waiting for the coordinator's state to change (a round opens, the run ends, ...) without
  // missing a change: read ChangeCount(), look at what you need, then WaitForChange(seen,
  // until) returns as soon as the count has moved past `seen`, or at `until`.
  uint64_t ChangeCount() const;
  void WaitForChange(uint64_t seen, std::chrono::steady_clock::time_point until);
  // Counts as a change and wakes every waiter (e.g. a parked call was cancelled).
  void NotifyChange();
  // The split data plane for `site` in `round`: a1 → a2 (training), g2 → g1 (steps the
  // site's body), a1 → a2 (evaluation, no state). Backward returns g1 before the body's
  // optimiser steps (BodySession then calls FinishBodyStep); a Split stream goes through a
  // BodySession (body_session.h), which keeps these calls in the order they need.
  absl::StatusOr<torch::Tensor> Forward(const std::string& site, int64_t round,
                                        const torch::Tensor& a1);
  absl::StatusOr<torch::Tensor> Backward(const std::string& site, int64_t round,
                                         const torch::Tensor& g2);
  absl::StatusOr<torch::Tensor> Evaluate(const std::string& site, int64_t round,
                                         const torch::Tensor& a1);
  // Forward-only a1 → a2 through the teacher's body (methods with a teacher): the global body
  // as the round opened (β = 0) or its moving average.
  absl::StatusOr<torch::Tensor> Teacher(const std::string& site, int64_t round,
                                        const torch::Tensor& a1);
  // The site's trained front and back and its scalars; the round closes when every
  // participant has submitted or failed, or at the deadline. A refused update (bad scalars,
  // missing, mis-shaped or non-finite entries) leaves the site out of the round.
  absl::Status Submit(const std::string& site, SiteSubmission submission);
  // The site failed mid-round (stream broken, bad data): it is left out of this round.
  void MarkFailed(const std::string& site, int64_t round, const std::string& why);
  void CountBytes(const std::string& site, int64_t bytes_in, int64_t bytes_out);
  // Runs `work` (decoding a message, a body step, encoding the reply) where the coordinator
  // runs its tensor work while `round` is open, and waits for it. With more than one torch
  // thread that is the thread in Run(): LibTorch parallelises each operation with OpenMP, every
  // thread running such operations brings its own team of OpenMP workers, and once a process
  // has more workers than cores libgomp puts idle workers to sleep after every operation, so
  // each of the hundreds of operations in a step pays a wake-up (measured 1.2-1.7x slower,
  // docs/PERFORMANCE.md). With one torch thread, `work` runs on the caller's thread and sites'
  // steps run in parallel. kFailedPrecondition if `round` is not open (nothing is run).
  absl::Status RunTensorWork(int64_t round, const std::function<void()>& work);
  void Heartbeat(const std::string& site);
  int64_t current_round() const;

  // Runs every round; returns when the run is finished or Stop() is called.
  absl::Status Run();
  void Stop();

  // What /metrics and the dashboard show: the run's state, rounds and every enrolled site.
  MonitorSnapshot Snapshot() const;

  // The global model as it stands (front, body and back), e.g. for the final model file.
  SplitModel GlobalModel();
  // FedNoRo: the sites judged noisy after the warm-up (empty before, and for other methods).
  std::set<std::string> NoisySites() const;
  // Called on the Run() thread after each completed round with the new global model (the
  // simulator scores it on its held-out test set here). Set before Run().
  using RoundObserver = std::function<void(int64_t round, SplitModel& global)>;
  void SetRoundObserver(RoundObserver observer) { observer_ = std::move(observer); }

 private:
  friend class BodySession;
  // SFLV2: parks `site` until the shared body is its turn (returns at once in SFLV1, or if
  // the site can no longer take part: the data-plane call then says why). A site keeps the
  // turn until it submits or fails. Called before RunTensorWork: waiting must not hold up
  // the thread that runs everyone's tensor work.
  absl::Status WaitForTurn(const std::string& site, int64_t round);
  // After a Backward whose g1 is on its way: the body's optimiser steps now when that
  // overlaps other work (several sites), else the body's next call takes the step first.
  absl::Status FinishBodyStep(const std::string& site, int64_t round);

  // The kinds of work the body does for a site, each with its own budget of images a round.
  enum class BodyWork { kTrain, kBackward, kEvaluate, kTeacher };
  static constexpr int kBodyWorkKinds = 4;
  struct SiteState {
    int64_t num_images = 0;
    int64_t num_validation_images = 0;
    bool waiting = false;
    bool connected = false;
    int64_t bytes_in = 0;   // this round
    int64_t bytes_out = 0;  // this round
    // For the monitor: over the run (since this coordinator started).
    bool joined = false;
    std::optional<std::chrono::steady_clock::time_point> last_seen;
    int64_t bytes_in_total = 0, bytes_out_total = 0;
    int64_t rounds_included = 0, failures_total = 0;
    std::optional<double> train_loss, validation_dice, reliability, aggregation_weight;
  };
  struct Participant {
    // The site's body copy for this round (SFLV1), or the one shared body (SFLV2).
    std::shared_ptr<LocalBody> body;
    std::shared_ptr<std::mutex> body_mutex;
    bool submitted = false;
    bool failed = false;
    std::string failure;
    SiteSubmission submission;
    // Images the body has handled for the site this round, by kind of work (BodyWork).
    std::array<int64_t, kBodyWorkKinds> images_done{};
  };

  // A round after it closed: who took part, and the sites' traffic counters at that moment.
  struct ClosedRound {
    std::map<std::string, std::shared_ptr<Participant>> participants;
    std::map<std::string, SiteState> sites;
  };
  // The submitted updates of a closed round, ready for the aggregation rule.
  struct RoundUpdates {
    std::vector<SiteUpdate> client;  // front and back (and extra state), one per site
    std::vector<SiteUpdate> body;    // SFLV1: one per site; SFLV2: the one shared body
    std::map<std::string, double> teacher_losses;
  };

  explicit Coordinator(const RunOptions& options);
  // Takes up `run` (its settings must match these options): the state of its last completed
  // round, and the recorder on its row.
  absl::Status ResumeRun(RunStore* store, const RunRecord& run);
  // Every tensor a resumed coordinator needs (global parts, learned loss weights, teacher),
  // and the scalars beside them (FedNoRo's verdict, the warm-up's progress) as JSON.
  NamedTensors ResumeTensorsLocked();
  std::string ResumeScalarsLocked() const;
  absl::Status RestoreState(const NamedTensors& tensors, const std::string& scalars_json);
  // One round, as the phases below in order.
  absl::Status RunRound(int64_t round, bool* completed);
  std::vector<std::string> WaitingSitesLocked() const;
  // Waits for min_sites parked sites, then up to round_open_wait_seconds for the others;
  // false if the coordinator is stopping.
  bool WaitForSites(std::unique_lock<std::mutex>& lock);
  // Gives each waiting site its body (a fresh copy, or SFLV2's shared one) and announces the
  // round; `mutex_` held. Returns the round's deadline.
  absl::StatusOr<std::chrono::steady_clock::time_point> OpenRoundLocked(int64_t round);
  // Runs the round's tensor work until every participant submitted or failed, or until the
  // deadline, then closes the round: from here on its messages are refused.
  ClosedRound CollectSubmissions(std::unique_lock<std::mutex>& lock,
                                 std::chrono::steady_clock::time_point deadline);
  RoundUpdates GatherUpdates(ClosedRound& closed) const;
  // Combines the updates into the global model; returns each client update's weight.
  absl::StatusOr<std::vector<double>> AggregateRound(int64_t round, const RoundUpdates& updates);
  // The round's rows for the run store: each participant's metrics.
  std::vector<SiteRoundMetrics> RoundMetrics(int64_t round, const ClosedRound& closed,
                                             const std::vector<double>& weights,
                                             bool completed) const;
  absl::Status RecordRound(int64_t round, const ClosedRound& closed,
                           const std::vector<double>& weights, bool completed,
                           RoundClosing closing);
  // PollRound with `mutex_` held through `lock` (released when the run is over).
  absl::StatusOr<std::optional<RoundTicket>> PollRoundLocked(const std::string& site,
                                                             std::unique_lock<std::mutex>& lock);
  absl::StatusOr<std::shared_ptr<Participant>> ActiveParticipant(const std::string& site,
                                                                int64_t round);
  // Charges `images` of `work` to the site's round, or refuses (RESOURCE_EXHAUSTED) and marks
  // the site failed for the round when that goes past what its declared image counts allow:
  // a site cannot keep the body, or the tensor thread the sites share, busy without end.
  absl::Status ChargeBodyWork(const std::string& site, int64_t round, BodyWork work,
                              int64_t images);
  // The data plane's common path: check the batch's shape, charge its images, wait for the
  // site's turn (SFLV2), then run `call` on the site's body under its lock, turning torch
  // errors into statuses.
  absl::StatusOr<torch::Tensor> BodyCall(
      const std::string& site, int64_t round, const torch::Tensor& input,
      const std::vector<int64_t>& per_image_shape, const char* what, BodyWork work,
      absl::StatusOr<torch::Tensor> (LocalBody::*call)(const torch::Tensor&));
  // RunTensorWork for a data-plane call that answers with a tensor.
  absl::StatusOr<torch::Tensor> TensorWorkResult(
      int64_t round, const std::function<absl::StatusOr<torch::Tensor>()>& work);
  // Runs the queued tensor work (RunTensorWork) with `lock` released; false if there was none.
  bool RunQueuedTensorWork(std::unique_lock<std::mutex>& lock);
  void AdvanceTurnLocked();
  // Counts a change of state and wakes every waiter; `mutex_` held.
  void NotifyChangedLocked();
  // The global client parts plus the method's extra trainable state; `mutex_` held.
  NamedTensors ClientStateLocked();
  // Moves the teacher's body towards the global body (called as a round opens).
  void UpdateTeacherLocked();
  // FedNoRo: once the warm-up is over, splits the sites by their teacher losses.
  void FlagNoisySites(const std::vector<SiteUpdate>& updates,
                      const std::map<std::string, double>& teacher_losses);

  RunOptions options_;
  RoundRecorder recorder_;   // the run store's rows
  Checkpointer checkpointer_;  // the model files
  ActivationShapes shapes_;
  std::unique_ptr<Aggregator> aggregator_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t changes_ = 0;  // how many times changed_ was notified; `mutex_` held
  bool stopping_ = false;
  bool finished_ = false;
  int64_t round_ = 0;         // the open round, 0 between rounds
  int64_t last_completed_round_ = 0;
  bool resumed_ = false;
  int64_t resumed_after_round_ = 0;
  // For the monitor; `mutex_` held.
  std::string run_state_ = "waiting";
  int64_t resumes_ = 0;
  int64_t stale_updates_ = 0;
  std::chrono::steady_clock::time_point round_opened_at_;
  double round_seconds_sum_ = 0;
  int64_t round_seconds_count_ = 0;
  std::vector<RoundPoint> history_;
  // Records the run's end state for the monitor, then returns `result` (Run()'s exits).
  absl::Status EndRun(const std::string& state, absl::Status result);
  // The history of the rounds a resumed run completed before, from the store's metrics and
  // round timestamps.
  void LoadHistory(RunStore* store, int64_t run_id);
  int64_t deadline_unix_ms_ = 0;
  std::map<std::string, SiteState> sites_;
  std::map<std::string, std::shared_ptr<Participant>> participants_;
  std::map<std::string, int64_t> ticket_round_;  // the round each site was last handed
  std::vector<std::string> turn_order_;  // SFLV2: who trains the shared body, in order
  bool tensor_work_on_run_thread_ = false;  // torch uses more than one thread per operation
  std::thread::id run_thread_;
  std::deque<std::function<void()>> tensor_work_;  // queued for the Run() thread
  size_t turn_ = 0;
  RoundObserver observer_;
  SplitModel global_;
  NamedTensors extra_state_;  // "loss.log_variances" for SplitFed-CL with learned weights
  UNetSegment teacher_body_{nullptr};
  std::mutex teacher_mutex_;
  std::set<std::string> noisy_sites_;
  bool noise_decided_ = false;
  WarmUpTracker warm_up_;  // guarded by mutex_
  SiteUpdate client_template_;  // the global front/back's names and shapes, to check updates
};

}  // namespace splitfed
