#include "coordinator/coordinator.h"

#include <glog/logging.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <future>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "colearning/refinement.h"
#include "split/model_file.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

// A round's point on the monitor's plots: its traffic, and the included sites' mean
// validation Dice and training loss.
RoundPoint RoundPointOf(int64_t round, const std::vector<SiteRoundMetrics>& rows) {
  RoundPoint p;
  p.round = round;
  for (const SiteRoundMetrics& m : rows) {
    p.bytes += m.bytes_in + m.bytes_out;
    if (!m.included) continue;
    ++p.sites_included;
    p.mean_validation_dice += m.validation_dice.value_or(0);
    p.mean_train_loss += m.train_loss.value_or(0);
  }
  if (p.sites_included > 0) {
    p.mean_validation_dice /= p.sites_included;
    p.mean_train_loss /= p.sites_included;
  }
  return p;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Bad values from the network must never reach autograd as an exception.
template <typename Fn>
absl::StatusOr<torch::Tensor> Guarded(const std::string& what, Fn&& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    std::string message = e.what_without_backtrace();
    if (auto nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", message));
  }
}

absl::Status CheckBatchShape(const torch::Tensor& t, const std::vector<int64_t>& per_image,
                             const std::string& what) {
  std::vector<int64_t> expected = {t.dim() > 0 ? t.size(0) : -1};
  expected.insert(expected.end(), per_image.begin(), per_image.end());
  if (t.dim() != static_cast<int64_t>(expected.size()) || t.sizes().vec() != expected ||
      t.size(0) < 1 || t.size(0) > 4096)
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", c10::str(t.sizes()),
                                                   ", expected [N, ",
                                                   absl::StrJoin(per_image, ", "),
                                                   "] with 1 <= N <= 4096"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SplitMode> ParseSplitMode(const std::string& text) {
  if (text == "sflv1") return SplitMode::kV1;
  if (text == "sflv2") return SplitMode::kV2;
  return absl::InvalidArgumentError(
      absl::StrCat("split mode must be sflv1 or sflv2, got '", text, "'"));
}

const char* SplitModeName(SplitMode mode) { return mode == SplitMode::kV2 ? "sflv2" : "sflv1"; }

absl::Status RunOptions::Validate() const {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (rounds < 1) return bad(absl::StrCat("rounds must be at least 1, got ", rounds));
  if (enrolled_sites.empty()) return bad("enrolled_sites is empty: no site could ever join");
  if (min_sites < 1 || min_sites > static_cast<int64_t>(enrolled_sites.size()))
    return bad(absl::StrCat("min_sites must be in [1, ", enrolled_sites.size(),
                            "] (the enrolled sites), got ", min_sites));
  if (local_epochs < 1) return bad(absl::StrCat("local_epochs must be >= 1, got ", local_epochs));
  if (batch_size < 2) return bad(absl::StrCat("batch_size must be >= 2, got ", batch_size));
  if (!(learning_rate > 0)) return bad("learning_rate must be positive");
  if (!(round_deadline_seconds > 0)) return bad("round_deadline_seconds must be positive");
  if (!(round_open_wait_seconds >= 0)) return bad("round_open_wait_seconds must be >= 0");
  if (auto s = CutShapes(model, split, image_size, image_size); !s.ok()) return s.status();
  RETURN_IF_ERROR(method.Validate());
  return MakeAggregator(AggregationRule()).status();
}

std::string RunOptions::SettingsJson() const {
  const MethodOptions& m = method;
  const nlohmann::json settings = {
      {"run.rounds", rounds},
      {"run.min_sites", min_sites},
      {"run.mode", SplitModeName(mode)},
      {"run.method", m.name()},
      {"run.aggregation", AggregationRule()},
      {"run.seed", seed},
      {"run.local_epochs", local_epochs},
      {"run.batch_size", batch_size},
      {"run.learning_rate", learning_rate},
      {"run.activation_encoding", WireEncodingName(activation_encoding)},
      {"model.in_channels", model.in_channels},
      {"model.num_classes", model.num_classes},
      {"model.base_width", model.base_width},
      {"model.depth", model.depth},
      {"model.split", absl::StrCat(split.front_units, ",", split.back_units)},
      {"model.image_size", image_size},
      {"method.warmup_rounds", m.warmup_rounds},
      {"method.warmup_patience", m.warmup_patience},
      {"method.teacher_beta", m.teacher_beta},
      {"method.ramp_rounds", m.ramp_rounds},
      {"method.tau_min", m.threshold.tau_min},
      {"method.min_gap", m.threshold.min_gap},
      {"method.separation", m.threshold.separation},
      {"method.detection", colearning::DetectionModeName(m.threshold.detection)},
      {"method.threshold", m.threshold.fixed_tau ? "fixed" : "gmm"},
      {"method.kappa", m.kappa},
      {"method.refinement", RefinementName(m.refinement)},
      {"method.consistency", m.consistency},
      {"method.loss_weights", m.learned_loss_weights ? "learned" : "fixed"},
      {"method.distillation_weight", m.distillation_weight},
  };
  return settings.dump();
}

namespace {

// A resumed run must compute what it started computing: every setting but these must match.
absl::Status CheckSameSettings(const RunRecord& run, const std::string& current_json) {
  static const std::set<std::string> kMayChange = {"run.rounds", "run.min_sites"};
  const nlohmann::json stored = nlohmann::json::parse(run.config_json, nullptr, false);
  const nlohmann::json current = nlohmann::json::parse(current_json);
  const std::string where = absl::StrCat("run ", run.id, " ('", run.name, "')");
  const std::string remedy =
      "; set it back to resume that run, or start a new one with --new-run";
  if (!stored.is_object())
    return absl::FailedPreconditionError(absl::StrCat(
        where, " has unreadable settings in the run store", remedy));
  for (const auto& [key, value] : current.items()) {
    if (kMayChange.count(key)) continue;
    if (!stored.contains(key))
      return absl::FailedPreconditionError(absl::StrCat(
          where, " was started by an older coordinator that did not record '", key, "'",
          remedy));
    if (stored[key] != value)
      return absl::FailedPreconditionError(absl::StrCat(
          key, " is ", value.dump(), " in this configuration, but ", where,
          " was started with ", stored[key].dump(), remedy));
  }
  return absl::OkStatus();
}

}  // namespace

Coordinator::Coordinator(const RunOptions& options) : options_(options), warm_up_(options.method) {}

Coordinator::~Coordinator() { Stop(); }

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const RunOptions& options,
                                                                  RunStore* store) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Coordinator> c(new Coordinator(options));
  c->shapes_ = *CutShapes(options.model, options.split, options.image_size, options.image_size);
  std::vector<std::string> unit_order;
  for (const UnitSpec& u : UnitSequence(options.model))
    if (!u.name.empty()) unit_order.push_back(u.name);
  c->aggregator_ = *MakeAggregator(options.AggregationRule(), unit_order);
  torch::manual_seed(options.seed);
  c->global_ = MakeSplitModel(options.model, options.split);
  if (options.method.kind == MethodKind::kColearning && options.method.learned_loss_weights)
    c->extra_state_[kLossLogVariances] = torch::zeros({3});  // s_rel, s_unrel, s_cons
  c->client_template_.site = "global";
  c->client_template_.num_images = 1;
  c->client_template_.state = c->ClientStateLocked();
  ASSIGN_OR_RETURN(c->checkpointer_,
                   Checkpointer::Create(options.checkpoint_dir, options.checkpoint_every_round,
                                        options.model, options.split, options.image_size));
  if (options.resume && store) {
    ASSIGN_OR_RETURN(const std::optional<RunRecord> latest, store->LatestRun(options.run_name));
    if (latest && latest->status != "finished") {
      RETURN_IF_ERROR(c->ResumeRun(store, *latest));
      return c;
    }
  }
  ASSIGN_OR_RETURN(c->recorder_,
                   RoundRecorder::Create(store, options.run_name, options.SettingsJson()));
  return c;
}

absl::Status Coordinator::ResumeRun(RunStore* store, const RunRecord& run) {
  RETURN_IF_ERROR(CheckSameSettings(run, options_.SettingsJson()));
  ASSIGN_OR_RETURN(const std::vector<RoundRecord> rounds, store->Rounds(run.id));
  const RoundRecord* last = nullptr;  // rounds complete in order: the last completed one
  for (const RoundRecord& r : rounds)
    if (r.state == "completed") last = &r;
  if (last) {
    if (last->resume_path.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "run ", run.id, " ('", run.name, "') completed round ", last->round,
          " without a resume state (its coordinator kept no checkpoints); start a new run "
          "with --new-run"));
    ASSIGN_OR_RETURN(
        const NamedTensors state,
        Checkpointer::LoadResumeState(last->resume_path, last->resume_sha256, last->round));
    RETURN_IF_ERROR(RestoreState(state, last->resume_json));
    last_completed_round_ = last->round;
  }
  ASSIGN_OR_RETURN(recorder_, RoundRecorder::Resume(store, run.id));
  resumed_ = true;
  resumes_ = run.resumed + 1;
  LoadHistory(store, run.id);
  resumed_after_round_ = last_completed_round_;
  LOG(INFO) << "event=run_resumed run=" << run.id << " was=" << run.status
            << " completed_rounds=" << last_completed_round_;
  return absl::OkStatus();
}

void Coordinator::LoadHistory(RunStore* store, int64_t run_id) {
  absl::StatusOr<std::vector<SiteRoundMetrics>> rows = store->Metrics(run_id);
  if (!rows.ok()) return;  // the plots start at the resume; nothing else depends on them
  std::map<int64_t, std::vector<SiteRoundMetrics>> by_round;
  for (SiteRoundMetrics& m : *rows)
    if (m.round <= last_completed_round_) by_round[m.round].push_back(std::move(m));
  // A round's duration is its completed attempt's, from the store's timestamps.
  std::map<int64_t, double> durations;
  if (absl::StatusOr<std::vector<RoundRecord>> rounds = store->Rounds(run_id); rounds.ok())
    for (const RoundRecord& r : *rounds)
      if (r.state == "completed")
        if (auto d = SecondsBetween(r.started_at, r.finished_at); d.ok()) durations[r.round] = *d;
  for (const auto& [round, round_rows] : by_round) {
    RoundPoint point = RoundPointOf(round, round_rows);
    point.duration_seconds = durations[round];
    history_.push_back(point);
  }
}

MonitorSnapshot Coordinator::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  MonitorSnapshot s;
  s.run_id = run_id();
  s.run_name = options_.run_name;
  s.method = options_.method.name();
  s.mode = SplitModeName(options_.mode);
  s.state = run_state_;
  s.current_round = round_;
  s.rounds_planned = options_.rounds;
  s.rounds_completed = last_completed_round_;
  s.resumes = resumes_;
  s.stale_updates_total = stale_updates_;
  s.round_duration_seconds_sum = round_seconds_sum_;
  s.round_duration_count = round_seconds_count_;
  s.sites_enrolled = static_cast<int64_t>(options_.enrolled_sites.size());
  s.history = history_;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::string> names = options_.enrolled_sites;
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    SiteSnapshot x;
    x.name = name;
    if (auto it = sites_.find(name); it != sites_.end()) {
      const SiteState& st = it->second;
      x.joined = st.joined;
      x.connected = st.connected;
      if (st.last_seen)
        x.last_seen_age_seconds = std::chrono::duration<double>(now - *st.last_seen).count();
      x.images = st.num_images;
      x.bytes_received_total = st.bytes_in_total;
      x.bytes_sent_total = st.bytes_out_total;
      x.rounds_included = st.rounds_included;
      x.failures_total = st.failures_total;
      x.train_loss = st.train_loss;
      x.validation_dice = st.validation_dice;
      x.reliability = st.reliability;
      x.aggregation_weight = st.aggregation_weight;
    }
    s.sites.push_back(std::move(x));
  }
  return s;
}

absl::Status Coordinator::EndRun(const std::string& state, absl::Status result) {
  std::lock_guard<std::mutex> lock(mutex_);
  run_state_ = state;
  return result;
}

NamedTensors Coordinator::ResumeTensorsLocked() {
  NamedTensors state = SplitModelState(global_);
  for (const auto& [name, t] : extra_state_) state[name] = t.clone();
  std::lock_guard<std::mutex> lock(teacher_mutex_);
  if (teacher_body_)
    for (auto& [name, t] : ExtractState(*teacher_body_)) state["teacher." + name] = t;
  return state;
}

std::string Coordinator::ResumeScalarsLocked() const {
  const WarmUpTracker::Progress warm = warm_up_.progress();
  return nlohmann::json{
      {"noisy_sites", noisy_sites_},
      {"noise_decided", noise_decided_},
      {"warm_up", {{"end", warm.end}, {"best", warm.best}, {"since_best", warm.since_best}}}}
      .dump();
}

absl::Status Coordinator::RestoreState(const NamedTensors& tensors,
                                       const std::string& scalars_json) {
  auto lost = [](const std::string& why) {
    return absl::DataLossError(absl::StrCat("the resume state does not fit this run: ", why));
  };
  std::map<std::string, NamedTensors> parts;  // by prefix
  for (const auto& [name, t] : tensors) {
    const size_t dot = name.find('.');
    if (dot == std::string::npos) return lost(absl::StrCat("unexpected entry '", name, "'"));
    parts[name.substr(0, dot + 1)][name.substr(dot + 1)] = t;
  }
  for (auto [prefix, part] : {std::pair{kFrontPrefix, global_.front},
                              {kBodyPrefix, global_.body}, {kBackPrefix, global_.back}})
    if (auto s = LoadState(*part, parts[prefix]); !s.ok()) return lost(std::string(s.message()));
  for (auto& [name, t] : extra_state_) {
    auto it = tensors.find(name);
    if (it == tensors.end() || it->second.sizes() != t.sizes())
      return lost(absl::StrCat("'", name, "' is missing or mis-shaped"));
    t = it->second.clone();
  }
  if (!parts["teacher."].empty()) {
    if (!options_.method.UsesTeacher()) return lost("a teacher, for a method without one");
    teacher_body_ = UNetSegment(options_.model, options_.split.front_units,
                                options_.split.BodyEnd(options_.model));
    if (auto s = LoadState(*teacher_body_, parts["teacher."]); !s.ok())
      return lost(std::string(s.message()));
    teacher_body_->eval();
  }
  const nlohmann::json scalars = nlohmann::json::parse(scalars_json, nullptr, false);
  try {
    noisy_sites_ = scalars.at("noisy_sites").get<std::set<std::string>>();
    noise_decided_ = scalars.at("noise_decided").get<bool>();
    const nlohmann::json& w = scalars.at("warm_up");
    warm_up_.Restore({w.at("end").get<int64_t>(), w.at("best").get<double>(),
                      w.at("since_best").get<int64_t>()});
  } catch (const nlohmann::json::exception& e) {
    return lost(absl::StrCat("its scalars are unreadable (", e.what(), ")"));
  }
  client_template_.state = ClientStateLocked();
  return absl::OkStatus();
}

absl::Status Coordinator::Join(const std::string& site, int64_t num_images,
                               int64_t num_validation_images) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (std::find(options_.enrolled_sites.begin(), options_.enrolled_sites.end(), site) ==
      options_.enrolled_sites.end())
    return absl::PermissionDeniedError(
        absl::StrCat("site '", site, "' is not enrolled in run ", run_id()));
  if (num_images < 0 || num_validation_images < 0)
    return absl::InvalidArgumentError(absl::StrCat("image counts ", num_images, " and ",
                                                   num_validation_images, " must be >= 0"));
  SiteState& s = sites_[site];
  if (num_images > 0) {  // 0: not loaded yet, the counts come with the next join
    s.num_images = num_images;
    s.num_validation_images = num_validation_images;
  }
  s.connected = true;
  s.joined = true;
  s.last_seen = std::chrono::steady_clock::now();
  lock.unlock();
  recorder_.SiteSeen(site, num_images, true);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<RoundTicket>> Coordinator::PollRound(const std::string& site) {
  std::unique_lock<std::mutex> lock(mutex_);
  return PollRoundLocked(site, lock);
}

void Coordinator::StopWaiting(const std::string& site) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = sites_.find(site);
  if (it != sites_.end()) it->second.waiting = false;
}

uint64_t Coordinator::ChangeCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return changes_;
}

void Coordinator::WaitForChange(uint64_t seen, std::chrono::steady_clock::time_point until) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_until(lock, until, [&] { return changes_ != seen; });
}

void Coordinator::NotifyChange() {
  std::lock_guard<std::mutex> lock(mutex_);
  NotifyChangedLocked();
}

void Coordinator::NotifyChangedLocked() {
  ++changes_;
  changed_.notify_all();
}

absl::StatusOr<std::optional<RoundTicket>> Coordinator::PollRoundLocked(
    const std::string& site, std::unique_lock<std::mutex>& lock) {
  auto it = sites_.find(site);
  if (it == sites_.end())
    // NOT_FOUND tells the site to join again (e.g. the coordinator restarted under it).
    return absl::NotFoundError(absl::StrCat("site '", site, "' has not joined"));
  it->second.last_seen = std::chrono::steady_clock::now();
  if (!it->second.waiting || !it->second.connected) {
    it->second.waiting = true;  // the Run() thread counts the waiting sites to open a round
    it->second.connected = true;
    NotifyChangedLocked();
  }
  if (finished_ || stopping_) {
    it->second.waiting = false;
    it->second.connected = false;  // the site leaves once told the run is over
    const int64_t images = it->second.num_images;
    lock.unlock();
    recorder_.SiteSeen(site, images, false);
    RoundTicket t;
    t.finished = true;
    return t;
  }
  // A participant that asks again before submitting or failing never received its ticket
  // (the answer was lost on the way): it gets the same one again.
  auto p = participants_.find(site);
  const bool handed = ticket_round_[site] == round_;
  if (round_ > 0 && p != participants_.end() &&
      (!handed || (!p->second->submitted && !p->second->failed))) {
    ticket_round_[site] = round_;
    it->second.waiting = false;
    RoundTicket t;
    t.round = round_;
    t.deadline_unix_ms = deadline_unix_ms_;
    t.shuffle_seed = options_.seed * 1000003ULL + static_cast<uint64_t>(round_);
    t.client_state = ClientStateLocked();
    t.warming_up = warm_up_.WarmingUp(round_);
    t.consistency_weight = warm_up_.ConsistencyWeight(round_);
    t.distil = noisy_sites_.count(site) > 0;
    return t;
  }
  return std::nullopt;
}

absl::StatusOr<std::shared_ptr<Coordinator::Participant>> Coordinator::ActiveParticipant(
    const std::string& site, int64_t round) {
  std::lock_guard<std::mutex> lock(mutex_);
  // ABORTED: the message belongs to a round that is no longer (or not yet) this site's; the
  // site drops the round and waits for the next one.
  if (round <= last_completed_round_) {
    ++stale_updates_;
    return absl::AbortedError(absl::StrCat(
        "stale update: round ", round, " is already over (", last_completed_round_,
        " rounds completed); the site drops it and takes part in the next round"));
  }
  if (round_ == 0 || round != round_)
    return absl::AbortedError(absl::StrCat(
        "round ", round, " is not open (", round_ ? absl::StrCat("round ", round_, " is") :
                                                    std::string("no round is"), ")"));
  auto it = participants_.find(site);
  if (it == participants_.end())
    return absl::AbortedError(
        absl::StrCat("site '", site, "' does not take part in round ", round));
  if (it->second->failed)
    return absl::AbortedError(absl::StrCat("site '", site, "' was left out of round ",
                                                      round, ": ", it->second->failure));
  if (it->second->submitted)
    return absl::AbortedError(
        absl::StrCat("site '", site, "' already submitted round ", round));
  return it->second;
}

absl::StatusOr<torch::Tensor> Coordinator::BodyCall(
    const std::string& site, int64_t round, const torch::Tensor& input,
    const std::vector<int64_t>& per_image_shape, const char* what,
    BodyWork work, absl::StatusOr<torch::Tensor> (LocalBody::*call)(const torch::Tensor&)) {
  RETURN_IF_ERROR(CheckBatchShape(input, per_image_shape, what));
  RETURN_IF_ERROR(ChargeBodyWork(site, round, work, input.size(0)));
  RETURN_IF_ERROR(WaitForTurn(site, round));
  ASSIGN_OR_RETURN(auto p, ActiveParticipant(site, round));
  return TensorWorkResult(round, [&] {
    std::lock_guard<std::mutex> lock(*p->body_mutex);
    return Guarded(what, [&] { return ((*p->body).*call)(input); });
  });
}

absl::Status Coordinator::ChargeBodyWork(const std::string& site, int64_t round, BodyWork work,
                                         int64_t images) {
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (round != round_) return absl::OkStatus();  // ActiveParticipant says why
    auto p = participants_.find(site);
    if (p == participants_.end()) return absl::OkStatus();
    const SiteState& s = sites_[site];
    // A site trains on each of its images once an epoch (in as many views as its method
    // sends), asks the teacher once for each, and evaluates each validation image once
    // (client/site_client.cc).
    const int64_t views = options_.method.TrainingViewsPerImage();
    int64_t budget = 0;
    const char* kind = "";
    switch (work) {
      case BodyWork::kTrain:
        budget = options_.local_epochs * s.num_images * views;
        kind = "training";
        break;
      case BodyWork::kBackward:
        budget = options_.local_epochs * s.num_images * views;
        kind = "gradient";
        break;
      case BodyWork::kEvaluate:
        budget = s.num_validation_images;
        kind = "evaluation";
        break;
      case BodyWork::kTeacher:
        budget = s.num_images;
        kind = "teacher";
        break;
    }
    int64_t& done = p->second->images_done[static_cast<int>(work)];
    if (done + images <= budget) {
      done += images;
      return absl::OkStatus();
    }
    refused = absl::ResourceExhaustedError(absl::StrCat(
        "site '", site, "' asked for ", done + images, " ", kind, " images in round ", round,
        ", more than its declared ", s.num_images, " training and ", s.num_validation_images,
        " validation images allow (", budget, "); it is left out of the round"));
  }
  LOG(WARNING) << "event=body_work_refused site=" << site << " round=" << round << " reason=\""
               << refused.message() << "\"";
  MarkFailed(site, round, std::string(refused.message()));
  return refused;
}

absl::Status Coordinator::RunTensorWork(int64_t round, const std::function<void()>& work) {
  std::unique_lock<std::mutex> lock(mutex_);
  const bool here = std::this_thread::get_id() == run_thread_;  // e.g. closing the round
  if (!here && (round_ != round || round == 0))
    return absl::AbortedError(absl::StrCat("round ", round, " is not open"));
  if (here || !tensor_work_on_run_thread_) {
    lock.unlock();
    work();
    return absl::OkStatus();
  }
  std::packaged_task<void()> task(work);
  std::future<void> done = task.get_future();
  tensor_work_.emplace_back([&task] { task(); });
  NotifyChangedLocked();
  lock.unlock();
  done.get();  // rethrows what `work` threw
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> Coordinator::TensorWorkResult(
    int64_t round, const std::function<absl::StatusOr<torch::Tensor>()>& work) {
  absl::StatusOr<torch::Tensor> result;
  RETURN_IF_ERROR(RunTensorWork(round, [&] { result = work(); }));
  return result;
}

bool Coordinator::RunQueuedTensorWork(std::unique_lock<std::mutex>& lock) {
  bool ran = false;
  while (!tensor_work_.empty()) {
    std::function<void()> next = std::move(tensor_work_.front());
    tensor_work_.pop_front();
    lock.unlock();
    next();
    lock.lock();
    ran = true;
  }
  return ran;
}

absl::StatusOr<torch::Tensor> Coordinator::Forward(const std::string& site, int64_t round,
                                                   const torch::Tensor& a1) {
  return BodyCall(site, round, a1, shapes_.a1, "a1", BodyWork::kTrain, &LocalBody::Forward);
}

absl::StatusOr<torch::Tensor> Coordinator::Backward(const std::string& site, int64_t round,
                                                    const torch::Tensor& g2) {
  return BodyCall(site, round, g2, shapes_.a2, "g2", BodyWork::kBackward,
                  &LocalBody::BackwardDeferringStep);
}

absl::Status Coordinator::FinishBodyStep(const std::string& site, int64_t round) {
  // With one site the cores are that site's while it works on g1: a step beside it slows its
  // front by more than the step costs when it waits for the site's next message, which the
  // body takes first (docs/PERFORMANCE.md, "The body's step, overlapped or not"). With more
  // sites the step fills time the coordinator would otherwise spend waiting.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (participants_.size() == 1) return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto p, ActiveParticipant(site, round));
  return TensorWorkResult(round,
                          [&] {
                            std::lock_guard<std::mutex> lock(*p->body_mutex);
                            return Guarded("the body's optimiser step", [&] {
                              p->body->FinishStep();
                              return torch::Tensor();
                            });
                          })
      .status();
}

absl::StatusOr<torch::Tensor> Coordinator::Evaluate(const std::string& site, int64_t round,
                                                    const torch::Tensor& a1) {
  return BodyCall(site, round, a1, shapes_.a1, "a1", BodyWork::kEvaluate, &LocalBody::Evaluate);
}

absl::StatusOr<torch::Tensor> Coordinator::Teacher(const std::string& site, int64_t round,
                                                   const torch::Tensor& a1) {
  if (!options_.method.UsesTeacher())
    return absl::FailedPreconditionError(absl::StrCat(
        "method '", options_.method.name(), "' has no teacher: TEACHER messages are refused"));
  RETURN_IF_ERROR(CheckBatchShape(a1, shapes_.a1, "a1"));
  RETURN_IF_ERROR(ChargeBodyWork(site, round, BodyWork::kTeacher, a1.size(0)));
  if (auto p = ActiveParticipant(site, round); !p.ok()) return p.status();
  return TensorWorkResult(round, [&] {
    std::lock_guard<std::mutex> lock(teacher_mutex_);
    return Guarded("a1", [&] {
      torch::NoGradGuard no_grad;
      return teacher_body_->forward(a1);
    });
  });
}

NamedTensors Coordinator::ClientStateLocked() {
  NamedTensors state = ClientPartsState(global_);
  for (const auto& [name, t] : extra_state_) state[name] = t.clone();
  return state;
}

void Coordinator::UpdateTeacherLocked() {
  if (!options_.method.UsesTeacher()) return;
  std::lock_guard<std::mutex> lock(teacher_mutex_);
  torch::NoGradGuard no_grad;
  const NamedTensors global = ExtractState(*global_.body);
  if (!teacher_body_) {
    teacher_body_ = UNetSegment(options_.model, options_.split.front_units,
                                options_.split.BodyEnd(options_.model));
    LoadState(*teacher_body_, global).IgnoreError();  // same architecture: cannot fail
    teacher_body_->eval();
    return;
  }
  const double beta = options_.method.teacher_beta;
  NamedTensors blended;
  for (const auto& [name, t] : ExtractState(*teacher_body_))
    blended[name] = t.is_floating_point() ? beta * t + (1 - beta) * global.at(name)
                                          : global.at(name);
  LoadState(*teacher_body_, blended).IgnoreError();
}

void Coordinator::FlagNoisySites(const std::vector<SiteUpdate>& updates,
                                 const std::map<std::string, double>& teacher_losses) {
  std::vector<double> losses;
  for (const SiteUpdate& u : updates) losses.push_back(teacher_losses.at(u.site));
  noise_decided_ = true;
  absl::StatusOr<colearning::TwoGaussians> fit = colearning::FitTwoGaussians(losses);
  // Too few sites, or one population (means within δ): nobody is flagged.
  if (!fit.ok() || fit->mean[1] - fit->mean[0] < options_.method.threshold.min_gap) {
    LOG(INFO) << "event=noise_detection flagged=none";
    return;
  }
  std::string names;
  for (size_t k = 0; k < updates.size(); ++k)
    if (fit->PosteriorLow(losses[k]) <= 0.5) {
      noisy_sites_.insert(updates[k].site);
      names += (names.empty() ? "" : ",") + updates[k].site;
    }
  LOG(INFO) << "event=noise_detection flagged=" << (names.empty() ? "none" : names);
}

std::set<std::string> Coordinator::NoisySites() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return noisy_sites_;
}

absl::Status Coordinator::Submit(const std::string& site, SiteSubmission submission) {
  ASSIGN_OR_RETURN(auto p, ActiveParticipant(site, submission.round));
  // A refused update leaves the site out of the round at once (the others need not wait for
  // the deadline); the error says why.
  auto refuse = [&](const absl::Status& why) {
    MarkFailed(site, submission.round, absl::StrCat("update refused: ", why.message()));
    return why;
  };
  if (submission.num_images < 1)
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("site '", site, "' reports ", submission.num_images, " images")));
  if (auto s = CheckSubmissionScalars(site, submission); !s.ok()) return refuse(s);
  // The update must fit the global parts exactly and hold finite values.
  SiteUpdate candidate;
  candidate.site = site;
  candidate.num_images = submission.num_images;
  candidate.state = submission.client_state;
  if (auto s = ValidateUpdates({client_template_, candidate}); !s.ok()) return refuse(s);
  std::lock_guard<std::mutex> lock(mutex_);
  p->submission = std::move(submission);
  p->submitted = true;
  AdvanceTurnLocked();
  NotifyChangedLocked();
  return absl::OkStatus();
}

void Coordinator::MarkFailed(const std::string& site, int64_t round, const std::string& why) {
  int64_t images = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (round != round_) return;
    auto it = participants_.find(site);
    if (it == participants_.end() || it->second->submitted || it->second->failed) return;
    it->second->failed = true;
    it->second->failure = why;
    AdvanceTurnLocked();
    sites_[site].connected = false;
    images = sites_[site].num_images;
    NotifyChangedLocked();
  }
  // `splitfed status` shows the site as disconnected until it is heard from again.
  recorder_.SiteSeen(site, images, false);
}

absl::Status Coordinator::WaitForTurn(const std::string& site, int64_t round) {
  if (options_.mode != SplitMode::kV2) return absl::OkStatus();
  std::unique_lock<std::mutex> lock(mutex_);
  // Woken by every change of the turn: a submit, a failure, the round's close, Stop().
  changed_.wait(lock, [&] {
    if (stopping_ || round_ != round || turn_ >= turn_order_.size() ||
        turn_order_[turn_] == site)
      return true;
    auto it = participants_.find(site);
    return it == participants_.end() || it->second->failed || it->second->submitted;
  });
  return absl::OkStatus();  // ActiveParticipant() then says why the site cannot go on, if so
}

void Coordinator::AdvanceTurnLocked() {
  while (turn_ < turn_order_.size()) {
    auto it = participants_.find(turn_order_[turn_]);
    if (it != participants_.end() && !it->second->submitted && !it->second->failed) return;
    ++turn_;
  }
}

void Coordinator::CountBytes(const std::string& site, int64_t bytes_in, int64_t bytes_out) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = sites_.find(site);
  if (it == sites_.end()) return;
  it->second.bytes_in += bytes_in;
  it->second.bytes_out += bytes_out;
  it->second.bytes_in_total += bytes_in;
  it->second.bytes_out_total += bytes_out;
  it->second.last_seen = std::chrono::steady_clock::now();
}

void Coordinator::Heartbeat(const std::string& site) {
  int64_t images = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sites_.find(site);
    if (it == sites_.end()) return;
    it->second.connected = true;
    it->second.last_seen = std::chrono::steady_clock::now();
    images = it->second.num_images;
  }
  recorder_.SiteSeen(site, images, true);
}

int64_t Coordinator::current_round() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return round_;
}

void Coordinator::Stop() {
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = true;
  NotifyChangedLocked();
}

SplitModel Coordinator::GlobalModel() {
  std::lock_guard<std::mutex> lock(mutex_);
  return global_;
}

absl::Status Coordinator::Run() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    run_thread_ = std::this_thread::get_id();
    tensor_work_on_run_thread_ = torch::get_num_threads() > 1;
  }
  for (int64_t round = last_completed_round_ + 1; round <= options_.rounds; ++round) {
    bool completed = false;
    while (!completed) {
      if (auto s = RunRound(round, &completed); !s.ok())
        return EndRun("failed", recorder_.RunFailed(s));
      std::unique_lock<std::mutex> lock(mutex_);
      if (stopping_) {
        finished_ = true;
        NotifyChangedLocked();
        lock.unlock();
        return EndRun("stopped", recorder_.RunStopped());
      }
    }
  }
  if (auto saved = checkpointer_.SaveFinal(global_); !saved.ok())
    return EndRun("failed", recorder_.RunFailed(saved.status()));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
    NotifyChangedLocked();
  }
  absl::Status recorded = recorder_.RunFinished();
  return EndRun(recorded.ok() ? "finished" : "failed", recorded);
}

absl::Status Coordinator::RunRound(int64_t round, bool* completed) {
  *completed = false;
  std::unique_lock<std::mutex> lock(mutex_);
  if (!WaitForSites(lock)) return absl::OkStatus();
  ASSIGN_OR_RETURN(const auto deadline, OpenRoundLocked(round));
  ClosedRound closed = CollectSubmissions(lock, deadline);
  lock.unlock();

  RoundUpdates updates = GatherUpdates(closed);
  const bool enough = static_cast<int64_t>(updates.client.size()) >= options_.min_sites;
  std::vector<double> weights;
  RoundClosing closing;
  if (enough) {
    ASSIGN_OR_RETURN(weights, AggregateRound(round, updates));
    if (observer_) observer_(round, global_);
    ASSIGN_OR_RETURN(closing.checkpoint_path, checkpointer_.SaveRound(round, global_));
    // The resume state is on disk before the store's row that names it commits: a crash in
    // between leaves the round "training" and the coordinator resumes from the round before.
    if (options_.write_resume_state) {
      NamedTensors state;
      {
        std::lock_guard<std::mutex> relock(mutex_);
        state = ResumeTensorsLocked();
        closing.resume_json = ResumeScalarsLocked();
      }
      ASSIGN_OR_RETURN(const Checkpointer::SavedState saved,
                       checkpointer_.SaveResumeState(round, state));
      closing.resume_path = saved.path;
      closing.resume_sha256 = saved.sha256;
    }
  }
  RETURN_IF_ERROR(RecordRound(round, closed, weights, enough, std::move(closing)));
  if (enough) {
    std::lock_guard<std::mutex> relock(mutex_);
    last_completed_round_ = round;
  }
  *completed = enough;
  return absl::OkStatus();
}

std::vector<std::string> Coordinator::WaitingSitesLocked() const {
  std::vector<std::string> names;
  for (const auto& [name, s] : sites_)
    if (s.waiting) names.push_back(name);
  return names;
}

bool Coordinator::WaitForSites(std::unique_lock<std::mutex>& lock) {
  // Woken when a site starts waiting (PollRoundLocked) and by Stop().
  changed_.wait(lock, [&] {
    return stopping_ || static_cast<int64_t>(WaitingSitesLocked().size()) >= options_.min_sites;
  });
  const auto open_by = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(
                           static_cast<int64_t>(options_.round_open_wait_seconds * 1000));
  changed_.wait_until(lock, open_by, [&] {
    return stopping_ || WaitingSitesLocked().size() >= options_.enrolled_sites.size();
  });
  return !stopping_;
}

absl::StatusOr<std::chrono::steady_clock::time_point> Coordinator::OpenRoundLocked(
    int64_t round) {
  // Every waiting site takes part, each with a fresh copy of the body (SFLV1) or all with the
  // one shared body, taken in turns in a seeded random order (SFLV2).
  participants_.clear();
  const NamedTensors body_state = ExtractState(*global_.body);
  auto fresh_body = [&]() -> absl::StatusOr<std::shared_ptr<LocalBody>> {
    UNetSegment body(options_.model, options_.split.front_units,
                     options_.split.BodyEnd(options_.model));
    RETURN_IF_ERROR(LoadState(*body, body_state));
    return std::make_shared<LocalBody>(body, options_.learning_rate);
  };
  std::shared_ptr<LocalBody> shared_body;
  auto shared_mutex = std::make_shared<std::mutex>();
  if (options_.mode == SplitMode::kV2) {
    ASSIGN_OR_RETURN(shared_body, fresh_body());
  }
  turn_order_ = WaitingSitesLocked();
  std::mt19937_64 order_rng(options_.seed * 7919ULL + static_cast<uint64_t>(round));
  std::shuffle(turn_order_.begin(), turn_order_.end(), order_rng);
  turn_ = 0;
  for (const std::string& name : turn_order_) {
    auto p = std::make_shared<Participant>();
    if (shared_body) {
      p->body = shared_body;
      p->body_mutex = shared_mutex;
    } else {
      ASSIGN_OR_RETURN(p->body, fresh_body());
      p->body_mutex = std::make_shared<std::mutex>();
    }
    participants_[name] = p;
    sites_[name].bytes_in = sites_[name].bytes_out = 0;
  }
  // Recorded before the round opens, so that a store failure leaves no round half-open.
  RETURN_IF_ERROR(recorder_.RoundStarted(round));
  UpdateTeacherLocked();
  round_ = round;
  run_state_ = "training";
  round_opened_at_ = std::chrono::steady_clock::now();
  deadline_unix_ms_ =
      NowUnixMs() + static_cast<int64_t>(options_.round_deadline_seconds * 1000);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(
                            static_cast<int64_t>(options_.round_deadline_seconds * 1000));
  NotifyChangedLocked();
  return deadline;
}

Coordinator::ClosedRound Coordinator::CollectSubmissions(
    std::unique_lock<std::mutex>& lock, std::chrono::steady_clock::time_point deadline) {
  auto pending = [&] {
    for (const auto& [name, p] : participants_)
      if (!p->submitted && !p->failed) return true;
    return false;
  };
  // Woken by queued tensor work, a submit, a failure and Stop(); else by the deadline.
  while (!stopping_ && pending() && std::chrono::steady_clock::now() < deadline)
    if (!RunQueuedTensorWork(lock)) changed_.wait_until(lock, deadline);

  // Close the round; work queued before this still runs, so no caller is left waiting, and a
  // site parked for its SFLV2 turn hears that the round is over.
  round_ = 0;
  run_state_ = "waiting";
  NotifyChangedLocked();
  RunQueuedTensorWork(lock);
  ClosedRound closed;
  closed.participants.swap(participants_);
  closed.sites = sites_;
  return closed;
}

Coordinator::RoundUpdates Coordinator::GatherUpdates(ClosedRound& closed) const {
  RoundUpdates updates;
  for (auto& [name, p] : closed.participants) {
    std::lock_guard<std::mutex> body_lock(*p->body_mutex);  // let an in-flight step finish
    if (!p->submitted) {
      if (!p->failed) p->failure = "did not submit before the round deadline";
      continue;
    }
    const SiteSubmission& sub = p->submission;
    SiteUpdate update;
    update.site = name;
    update.num_images = sub.num_images;
    update.reliability = sub.reliability;
    update.validation_loss = sub.validation_loss;
    update.boundary_noise = sub.boundary_noise;
    update.flagged_noisy = noisy_sites_.count(name) > 0;
    updates.teacher_losses[name] = sub.teacher_loss;
    update.state = sub.client_state;
    updates.client.push_back(update);
    if (options_.mode == SplitMode::kV1 || updates.body.empty()) {
      update.state = ExtractState(*p->body->body());
      updates.body.push_back(std::move(update));
    }
  }
  return updates;
}

absl::StatusOr<std::vector<double>> Coordinator::AggregateRound(int64_t round,
                                                                const RoundUpdates& updates) {
  // A teacher method's warm-up rounds weigh by image count: the teacher is not yet worth
  // judging labels by.
  static const FedAvg kFedAvg;
  bool warm_up;
  {
    std::lock_guard<std::mutex> relock(mutex_);
    warm_up = warm_up_.WarmingUp(round);
  }
  const Aggregator& rule = warm_up ? static_cast<const Aggregator&>(kFedAvg) : *aggregator_;
  ASSIGN_OR_RETURN(std::vector<double> weights, rule.Weights(updates.client));
  ASSIGN_OR_RETURN(const NamedTensors client, rule.Aggregate(updates.client));
  // SFLV2's one body already holds every site's steps; only SFLV1's copies are combined.
  ASSIGN_OR_RETURN(NamedTensors body, options_.mode == SplitMode::kV2
                                          ? updates.body.front().state
                                          : rule.Aggregate(updates.body));
  NamedTensors front, back;
  SplitClientPartsState(client, &front, &back);
  std::lock_guard<std::mutex> relock(mutex_);
  RETURN_IF_ERROR(LoadState(*global_.front, front));
  RETURN_IF_ERROR(LoadState(*global_.back, back));
  RETURN_IF_ERROR(LoadState(*global_.body, body));
  for (auto& [name, t] : extra_state_) t = colearning::ClampLogVariances(client.at(name));
  // FedNoRo decides once, on the last warm-up round's reports, as the original does.
  if (warm_up && !updates.client.empty()) {
    double mean = 0;
    for (const SiteUpdate& u : updates.client) mean += u.validation_loss / updates.client.size();
    if (warm_up_.Observe(round, mean))
      LOG(INFO) << "event=warmup_ended round=" << round << " mean_validation_loss=" << mean
                << " patience=" << options_.method.warmup_patience;
  }
  if (options_.method.kind == MethodKind::kFedNoRo && !noise_decided_ && round >= warm_up_.end())
    FlagNoisySites(updates.client, updates.teacher_losses);
  return weights;
}

std::vector<SiteRoundMetrics> Coordinator::RoundMetrics(int64_t round, const ClosedRound& closed,
                                                       const std::vector<double>& weights,
                                                       bool completed) const {
  std::vector<SiteRoundMetrics> rows;
  size_t k = 0;
  for (const auto& [name, p] : closed.participants) {
    SiteRoundMetrics m;
    m.run_id = run_id();
    m.round = round;
    m.site = name;
    m.included = p->submitted && completed;
    if (auto site = closed.sites.find(name); site != closed.sites.end()) {
      m.bytes_in = site->second.bytes_in;
      m.bytes_out = site->second.bytes_out;
    }
    if (p->submitted) {
      m.train_loss = p->submission.train_loss;
      m.validation_dice = p->submission.validation_dice;
      m.validation_loss = p->submission.validation_loss;
      m.reliability = p->submission.reliability;
      if (completed) m.aggregation_weight = weights[k];
      ++k;
    } else {
      m.note = p->failure;
    }
    if (!completed && p->submitted) m.note = "round retried: too few sites submitted";
    rows.push_back(m);
  }
  return rows;
}

absl::Status Coordinator::RecordRound(int64_t round, const ClosedRound& closed,
                                      const std::vector<double>& weights, bool completed,
                                      RoundClosing closing) {
  for (const auto& [name, p] : closed.participants)
    if (p->submitted) recorder_.SiteSeen(name, p->submission.num_images, true);
  closing.round = round;
  closing.sites = RoundMetrics(round, closed, weights, completed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const SiteRoundMetrics& m : closing.sites) {
      SiteState& site = sites_[m.site];
      if (!m.train_loss) {  // did not submit: left out
        ++site.failures_total;
        continue;
      }
      site.train_loss = m.train_loss;
      site.validation_dice = m.validation_dice;
      site.reliability = m.reliability;
      if (!m.included) continue;
      site.aggregation_weight = m.aggregation_weight;
      ++site.rounds_included;
    }
    if (completed) {
      RoundPoint point = RoundPointOf(round, closing.sites);
      point.duration_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - round_opened_at_)
              .count();
      round_seconds_sum_ += point.duration_seconds;
      ++round_seconds_count_;
      history_.push_back(point);
    }
  }
  return recorder_.RoundClosed(std::move(closing), completed);
}

}  // namespace splitfed
