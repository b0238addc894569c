#include "sim/runner.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <set>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/site_client.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "provision/federation_kit.h"
#include "sim/report.h"
#include "sim/site_data.h"
#include "split/evaluate.h"
#include "status/status_macros.h"
#include "store/run_store.h"

namespace splitfed::sim {
namespace fs = std::filesystem;
namespace {

constexpr char kOracle[] = "oracle";
constexpr char kCleanLabels[] = "clean labels";

Scores ToScores(const ScoreAccumulator& acc) {
  Scores s;
  const ClassScore fg = acc.MeanForeground();
  s.dice = fg.dice;
  s.iou = fg.iou;
  s.hd95 = fg.hd95;
  for (int64_t c = 1; c < acc.num_classes(); ++c) s.dice_per_class.push_back(acc.MeanOfClass(c).dice);
  return s;
}

// The coordinator's options for one planned run: the experiment's federation with the run's
// method and seed, its final model in models/<run>/.
absl::StatusOr<RunOptions> CoordinatorOptions(const ExperimentConfig& c, const PlannedRun& plan,
                                              const std::string& slug) {
  RunOptions o;
  o.run_name = absl::StrCat(plan.method, " | ", plan.noise_name, " | seed ", plan.seed);
  o.rounds = c.rounds;
  o.min_sites = c.sites;
  o.local_epochs = c.local_epochs;
  o.batch_size = c.batch_size;
  o.learning_rate = c.learning_rate;
  o.round_deadline_seconds = 24 * 3600;  // one machine: a slow round is not a lost site
  o.round_open_wait_seconds = 0;
  ASSIGN_OR_RETURN(o.activation_encoding, ParseWireEncoding(c.activation_encoding));
  o.model = {c.channels, c.num_classes, c.base_width, c.depth};
  ASSIGN_OR_RETURN(o.split, SplitSpec::Parse(c.split));
  o.image_size = c.image_size;
  o.seed = plan.seed;
  const RunMethod method = MethodOf(plan.method, c);
  o.method = method.method;
  o.aggregation = method.aggregation;
  ASSIGN_OR_RETURN(o.mode, ParseSplitMode(c.mode));
  o.enrolled_sites = c.SiteNames();
  o.checkpoint_dir = (fs::path(c.out_dir) / "models" / slug).string();
  o.checkpoint_every_round = false;
  o.write_resume_state = false;  // an interrupted experiment reruns its unfinished runs whole
  return o;
}

// The transport: gRPC's in-process channel (no TLS), or mutual TLS on a loopback port with a
// kit provisioned once per experiment folder.
struct Transport {
  std::optional<TlsFiles> tls;  // the coordinator's; none: in-process
  std::string listen;
  std::map<std::string, TlsFiles> site_tls;
};

absl::StatusOr<Transport> PrepareTransport(const ExperimentConfig& c) {
  Transport t;
  if (c.transport != "mtls") return t;
  const fs::path kit = fs::path(c.out_dir) / "kit";
  if (!fs::exists(kit / "coordinator")) {
    KitOptions k;
    k.out_dir = kit.string();
    k.sites = c.SiteNames();
    k.overwrite = true;
    RETURN_IF_ERROR(ProvisionFederation(k));
  }
  ASSIGN_OR_RETURN(t.tls, ReadTlsFiles((kit / "coordinator/coordinator.crt").string(),
                                       (kit / "coordinator/coordinator.key").string(),
                                       (kit / "coordinator/ca.crt").string()));
  t.listen = "127.0.0.1:0";
  for (const std::string& name : c.SiteNames()) {  // before anything starts: errors return
    const fs::path dir = kit / "sites" / name;
    ASSIGN_OR_RETURN(t.site_tls[name],
                     ReadTlsFiles((dir / "site.crt").string(), (dir / "site.key").string(),
                                  (dir / "ca.crt").string()));
  }
  return t;
}

// Scores each closed round's global model on the test set. Scoring takes as long as a good
// part of a round, so it runs on its own thread, on a copy of the model, while the next round
// trains; rounds are scored in order.
class RoundScorer {
 public:
  RoundScorer(const RunOptions& o, const SegmentationSet& test,
              std::function<void(const RoundResult&)> scored)
      : options_(o), test_(test), scored_(std::move(scored)) {}
  ~RoundScorer() { Wait(); }

  // Called by the coordinator as each round closes.
  void Score(int64_t round, SplitModel& global) {
    auto copy = std::make_shared<SplitModel>(MakeSplitModel(options_.model, options_.split));
    CopyStateByName(*global.front, *copy->front);
    CopyStateByName(*global.body, *copy->body);
    CopyStateByName(*global.back, *copy->back);
    scoring_ = std::async(std::launch::async,
                          [this, round, copy, previous = std::move(scoring_)]() mutable {
                            previous.wait();
                            RoundResult r;
                            r.round = round;
                            r.test = ToScores(EvaluateSplitModel(*copy, test_));
                            {
                              std::lock_guard<std::mutex> lock(mutex_);
                              rounds_.push_back(r);
                            }
                            scored_(r);
                          });
  }
  void Wait() {
    if (scoring_.valid()) scoring_.wait();
  }
  // Every scored round, in order; call after Wait().
  std::vector<RoundResult> TakeRounds() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::move(rounds_);
  }

 private:
  const RunOptions& options_;
  const SegmentationSet& test_;
  std::function<void(const RoundResult&)> scored_;
  std::mutex mutex_;
  std::vector<RoundResult> rounds_;
  std::future<void> scoring_ = std::async(std::launch::deferred, [] {});
};

// SplitFed-CL's flags per (site, round), scored against the images the simulator corrupted.
class DetectionLog {
 public:
  // The site's reliability callback. The site trains on its first images (the rest
  // validate), in the loaded order, so flag i is about corrupted[i].
  std::function<void(int64_t, const std::vector<double>&, const std::vector<bool>&)> ForSite(
      const std::string& name, const std::vector<bool>& corrupted) {
    return [this, name, corrupted](int64_t round, const std::vector<double>&,
                                   const std::vector<bool>& reliable) {
      Detection d;
      for (size_t i = 0; i < reliable.size() && i < corrupted.size(); ++i) {
        d.flagged += !reliable[i];
        d.corrupted += corrupted[i];
        d.hits += !reliable[i] && corrupted[i];
      }
      if (d.flagged > 0) d.precision = static_cast<double>(d.hits) / d.flagged;
      if (d.corrupted > 0) d.recall = static_cast<double>(d.hits) / d.corrupted;
      std::lock_guard<std::mutex> lock(mutex_);
      detections_[{name, round}] = d;
    };
  }
  void FillIn(const std::string& site, int64_t round, SiteRoundResult* s) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto d = detections_.find({site, round});
    if (d == detections_.end()) return;
    s->flagged = d->second.flagged;
    s->flagged_corrupted = d->second.hits;
    s->corrupted = d->second.corrupted;
    s->detection_precision = d->second.precision;
    s->detection_recall = d->second.recall;
  }

 private:
  struct Detection {
    int64_t flagged = 0, hits = 0, corrupted = 0;
    double precision = -1, recall = -1;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int64_t>, Detection> detections_;
};

// The per-site records of the run store, next to each round's test scores.
void AttachSiteRecords(const std::vector<SiteRoundMetrics>& metrics, const DetectionLog& detections,
                       std::vector<RoundResult>* rounds) {
  for (RoundResult& r : *rounds)
    for (const SiteRoundMetrics& m : metrics) {
      if (m.round != r.round) continue;
      SiteRoundResult s;
      s.site = m.site;
      s.included = m.included;
      s.train_loss = m.train_loss.value_or(0);
      s.validation_dice = m.validation_dice.value_or(0);
      s.validation_loss = m.validation_loss.value_or(-1);
      s.aggregation_weight = m.aggregation_weight.value_or(0);
      s.reliability = m.reliability.value_or(1);
      s.bytes_in = m.bytes_in;
      s.bytes_out = m.bytes_out;
      detections.FillIn(m.site, m.round, &s);
      r.sites.push_back(s);
    }
}

}  // namespace

std::vector<PlannedRun> PlanRuns(const ExperimentConfig& config) {
  std::vector<PlannedRun> plan;
  for (uint64_t seed : config.seeds)
    for (const std::string& method : config.methods) {
      if (method == kOracle) {
        plan.push_back({method, &config.noise.front(), kCleanLabels, seed});
        continue;
      }
      for (const NoiseSetting& n : config.noise) plan.push_back({method, &n, n.name, seed});
    }
  return plan;
}

void SelectRoundByValidationLoss(RunResult& run) {
  if (run.rounds.empty()) return;
  const RoundResult* best = &run.rounds.back();
  double best_loss = std::numeric_limits<double>::infinity();
  for (const RoundResult& round : run.rounds) {
    double sum = 0;
    int64_t count = 0;
    for (const SiteRoundResult& s : round.sites)
      if (s.included && s.validation_loss >= 0) sum += s.validation_loss, ++count;
    // Ties keep the earlier round: no later round is better on the sites' evidence.
    if (count > 0 && sum / count < best_loss) best_loss = sum / count, best = &round;
  }
  run.selected_round = best->round;
  run.selected_test = best->test;
}

absl::StatusOr<std::vector<PlannedRun>> SelectRuns(const ExperimentConfig& config,
                                                   const RunFilter& filter) {
  for (const std::string& m : filter.only_methods)
    if (std::find(config.methods.begin(), config.methods.end(), m) == config.methods.end())
      return absl::InvalidArgumentError(absl::StrCat(
          "--only: '", m, "' is not one of the experiment's methods (", absl::StrJoin(config.methods, ", "), ")"));
  std::set<std::string> done;
  if (filter.resume) {
    ASSIGN_OR_RETURN(std::vector<RunResult> previous, LoadRuns(config));
    for (const RunResult& r : previous) done.insert(RunFileName(r));
  }
  std::vector<PlannedRun> plan;
  for (const PlannedRun& run : PlanRuns(config)) {
    const auto& only = filter.only_methods;
    if (!only.empty() && std::find(only.begin(), only.end(), run.method) == only.end()) continue;
    RunResult key;
    key.method = run.method, key.noise = run.noise_name, key.seed = run.seed;
    if (done.count(RunFileName(key))) continue;
    plan.push_back(run);
  }
  return plan;
}

ExperimentRunner::ExperimentRunner(ExperimentConfig config,
                                   std::function<void(const ProgressEvent&)> progress,
                                   RunFilter filter)
    : config_(std::move(config)), progress_(std::move(progress)), filter_(std::move(filter)) {}

absl::StatusOr<std::vector<RunResult>> ExperimentRunner::Run() {
  config_.out_dir = fs::absolute(config_.out_dir).lexically_normal().string();
  const ExperimentConfig& c = config_;
  RETURN_IF_ERROR(ValidateExperiment(c));
  std::error_code ec;
  fs::create_directories(c.out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(c.out_dir, ": cannot create the output folder: ", ec.message()));
  {
    std::ofstream resolved(fs::path(c.out_dir) / "config.toml");
    resolved << ExperimentToToml(c);
    if (!resolved)
      return absl::PermissionDeniedError(absl::StrCat(c.out_dir, ": cannot write config.toml"));
  }
  // Each (setting, seed)'s data is built once and shared by every method that runs on it (a
  // folder dataset is read from disk only then). The plan is seed-major, so one seed's data
  // is all that is kept. The first seed's is built up front: the previews show it, and a bad
  // dataset fails here rather than after some runs.
  uint64_t cached_seed = c.seeds.front();
  std::map<std::string, SimData> cache;  // setting name → data for `cached_seed`
  for (const NoiseSetting& n : c.noise) {
    ASSIGN_OR_RETURN(SimData data, BuildSimData(c, n, cached_seed));
    RETURN_IF_ERROR(WriteNoisePreviews(c, n, data));
    cache[n.name] = std::move(data);
  }
  // The sites already train in parallel, one thread each: intra-op threads on top of that
  // only fight over the cores (measured in docs/PERFORMANCE.md), so by default each op gets
  // the cores divided by the sites, at least one.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(c.threads > 0 ? c.threads
                                       : std::max<int>(1, cores / static_cast<int>(c.sites)));

  // A fresh experiment starts from an empty record; --resume keeps it and skips what it holds,
  // and --only keeps the other runs' records (another process may be writing them).
  const fs::path records = fs::path(c.out_dir) / "runs";
  if (!filter_.resume && filter_.only_methods.empty()) fs::remove_all(records, ec);
  ASSIGN_OR_RETURN(const std::vector<PlannedRun> plan, SelectRuns(c, filter_));
  std::vector<RunResult> finished;
  for (size_t i = 0; i < plan.size() && !stopping_; ++i) {
    const PlannedRun& run = plan[i];
    if (run.seed != cached_seed) {
      cache.clear();
      cached_seed = run.seed;
    }
    auto data = cache.find(run.noise->name);
    if (data == cache.end()) {
      ASSIGN_OR_RETURN(SimData built, BuildSimData(c, *run.noise, run.seed));
      data = cache.emplace(run.noise->name, std::move(built)).first;
    }
    ASSIGN_OR_RETURN(RunResult r, RunOne(run, data->second, i + 1, plan.size()));
    if (!r.finished) break;  // stopped part-way: not recorded
    RETURN_IF_ERROR(SaveRun(c, r));
    finished.push_back(std::move(r));
    ASSIGN_OR_RETURN(const std::vector<RunResult> all, LoadRuns(c));
    RETURN_IF_ERROR(WriteResults(c, all));
  }
  if (plan.empty()) {  // a --resume of a finished experiment rewrites its report
    ASSIGN_OR_RETURN(const std::vector<RunResult> all, LoadRuns(c));
    RETURN_IF_ERROR(WriteResults(c, all));
  }
  return finished;
}

void ExperimentRunner::Stop() {
  stopping_ = true;
  WakeSupervision();
}

void ExperimentRunner::WakeSupervision() {
  std::lock_guard<std::mutex> lock(supervise_mutex_);
  supervise_.notify_all();
}

absl::StatusOr<RunResult> ExperimentRunner::RunOne(const PlannedRun& plan, const SimData& data,
                                                   int64_t index, int64_t count) {
  const ExperimentConfig& c = config_;
  const bool oracle = plan.method == kOracle;
  RunResult result;
  result.method = plan.method;
  result.noise = plan.noise_name;
  result.seed = plan.seed;
  const std::string slug = absl::StrCat(RunSlug(plan.method, plan.noise_name), "-seed", plan.seed);

  // 1. The coordinator, its store, and the scoring of each round's global model.
  ASSIGN_OR_RETURN(const RunOptions o, CoordinatorOptions(c, plan, slug));
  result.model_path = (fs::path(o.checkpoint_dir) / "final.pt").string();
  ASSIGN_OR_RETURN(std::unique_ptr<RunStore> store,
                   RunStore::Open((fs::path(c.out_dir) / "runs.db").string()));
  ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, Coordinator::Create(o, store.get()));
  Coordinator& coord = *coordinator;
  ProgressEvent base;
  base.method = plan.method;
  base.noise = plan.noise_name;
  base.seed = plan.seed;
  base.run_index = index;
  base.run_count = count;
  base.rounds = c.rounds;
  RoundScorer scorer(o, data.test, [this, base](const RoundResult& r) {
    ProgressEvent e = base;
    e.round = r.round;
    e.round_closed = true;
    e.test_dice = r.test.dice;
    if (progress_) progress_(e);
  });
  coord.SetRoundObserver([&](int64_t round, SplitModel& global) { scorer.Score(round, global); });
  ASSIGN_OR_RETURN(const Transport transport, PrepareTransport(c));
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(&coord, store.get(), transport.listen, transport.tls));

  // 2. The run, and a site client per simulated site.
  const auto started = std::chrono::steady_clock::now();
  std::atomic<bool> run_ended{false};  // set before the future is ready, so the wait sees it
  std::future<absl::Status> run = std::async(std::launch::async, [&] {
    absl::Status s = coord.Run();
    run_ended = true;
    WakeSupervision();
    return s;
  });
  std::vector<std::unique_ptr<SiteClient>> clients;
  std::atomic<bool> site_failed{false};
  DetectionLog detections;
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> site_runs;
  for (const SiteData& site : data.sites) {
    SiteClientOptions so;
    if (transport.tls) {
      const TlsFiles& files = transport.site_tls.at(site.name);
      so.coordinator = absl::StrCat("127.0.0.1:", server->port());
      so.tls = ClientTls{files.certificate_pem, files.private_key_pem, files.ca_certificate_pem, ""};
    } else {
      so.channel = server->InProcessChannel();
      so.insecure_site_name = site.name;
    }
    so.validation_fraction = c.validation_fraction;
    so.max_reconnects = 5;
    so.initial_backoff_seconds = 0.1;
    const SegmentationSet& set = oracle ? site.clean : site.annotated;
    so.load_data = [&set, &c](const DataRequest& r) -> absl::StatusOr<SegmentationSet> {
      if (r.height != c.image_size || r.width != c.image_size || r.channels != c.channels ||
          r.num_classes != c.num_classes)
        return absl::InternalError("the coordinator asked for data of another shape");
      return set;
    };
    so.on_epoch = [this, base, name = site.name](const EpochReport& epoch) {
      ProgressEvent e = base;
      e.site = name;
      e.round = epoch.round;
      e.epoch = epoch.epoch;
      e.loss = epoch.loss;
      if (progress_) progress_(e);
    };
    so.on_reliability = detections.ForSite(site.name, site.corrupted);
    const int64_t n_val = ValidationImages(set.size(), c.validation_fraction);
    result.images_trained += (set.size() - n_val) * c.local_epochs * c.rounds;
    clients.push_back(std::make_unique<SiteClient>(so));
    site_runs.push_back(std::async(std::launch::async, [&, client = clients.back().get()] {
      absl::StatusOr<SiteRunSummary> r = client->Run();
      if (!r.ok()) {
        site_failed = true;
        WakeSupervision();
      }
      return r;
    }));
  }

  // 3. Wait for the run; stop everything on a stop request or when a site gave up.
  bool stopped = false, site_gave_up = false;
  while (!run_ended) {
    if (stopping_ && !stopped) {
      stopped = true;
      coord.Stop();
      for (auto& client : clients) client->Stop();
    }
    // Every simulated site is needed for every round: one that gave up (its error is reported
    // below) would leave the coordinator waiting for ever. (A site that simply finished is
    // not one: sites finish once the coordinator has.)
    if (site_failed && !site_gave_up && !stopping_) {
      site_gave_up = true;
      coord.Stop();
      for (auto& client : clients) client->Stop();
    }
    // Woken by Stop(), a failed site and the run's end (the flags are read under the lock,
    // so no wake-up falls between the checks above and this wait).
    std::unique_lock<std::mutex> lock(supervise_mutex_);
    supervise_.wait(lock, [&] {
      return run_ended || (stopping_ && !stopped) ||
             (site_failed && !site_gave_up && !stopping_);
    });
  }
  absl::Status run_status = run.get();
  scorer.Wait();
  result.rounds = scorer.TakeRounds();
  absl::Status site_status;
  for (auto& f : site_runs) {
    absl::StatusOr<SiteRunSummary> s = f.get();
    if (!s.ok() && !stopped && site_status.ok()) site_status = s.status();
  }
  server->Shutdown();
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!run_status.ok()) return run_status;
  if (stopped || stopping_) return result;  // finished stays false
  if (!site_status.ok())
    return absl::Status(site_status.code(),
                        absl::StrCat("a site failed in run '", o.run_name, "': ",
                                     site_status.message()));

  // 4. The result: per-site records from the run store, the final and the selected round.
  ASSIGN_OR_RETURN(const std::vector<SiteRoundMetrics> metrics, store->Metrics(coord.run_id()));
  AttachSiteRecords(metrics, detections, &result.rounds);
  if (result.rounds.empty()) return absl::InternalError("the run completed no round");
  result.final_test = result.rounds.back().test;
  SelectRoundByValidationLoss(result);
  result.finished = true;
  return result;
}

}  // namespace splitfed::sim
