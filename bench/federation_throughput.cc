// The federation on one machine, measured end to end: centralized training of the U-Net
// versus split training over mutual TLS on loopback (`splitfed coordinator` and one
// `splitfed client` per site, each its own process, as in production) versus split training
// over gRPC's in-process channel (the coordinator and one SiteClient thread per site in this
// process). Reports training images/s, bytes on the wire per trained image (fp32 and fp16
// activations) and the coordinator's peak memory, per site count. Every federated run sits
// between two centralized runs and is compared with their mean (this shared machine's speed
// drifts within minutes); the summary gives the median ratio over repeats.
//
// Two rates per federated run:
// - "train img/s": the sites' training images over the slowest site's local epochs of round 2
//   (the site's own clock, first batch to last of each epoch); this is what centralized
//   training (the same number of epochs, after one warm-up epoch) compares with;
// - "round img/s": trained images over the whole round 2 from the run store (opening to
//   closing: weights down and up, validation, aggregation and the checkpoint included).
//
// Threads (the core budget is `--threads`, default 2): centralized training uses all of it.
// Over mTLS, with one site the coordinator and the site each get the whole budget (the two
// sides of the cut take turns); with more sites every process gets one thread (they share
// the cores). In-process, each operation gets max(1, threads / sites) threads.
//
// Usage: bench_federation_throughput PATH_TO_splitfed [--out F] [--threads N]
//          [--sites 1,4,16] [--repeats R] [--epochs E] [--transports mtls,inprocess]
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>

#include "client/site_client.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "bench/median.h"
#include "datasets/phantom.h"
#include "provision/federation_kit.h"
#include "store/run_store.h"
#include "process/allocator.h"
#include "process/openmp_wait.h"
#include "split/trainer.h"

namespace {
namespace fs = std::filesystem;
using namespace splitfed;
using bench::Median;

constexpr int64_t kImagesPerSite = 160;  // 128 train + 32 validation at each site
constexpr int64_t kTrainPerSite = 128;
constexpr int64_t kSize = 64;

struct Settings {
  std::string splitfed;
  std::string out = "bench_federation_throughput.json";
  int threads = 2;
  std::vector<int> sites = {1, 4, 16};
  int repeats = 3;
  int epochs = 3;  // timed local epochs per site (round 2) and of centralized training
  std::vector<std::string> transports = {"mtls", "inprocess"};
};

double PeakRssMiB(const std::string& proc_status = "/proc/self/status") {
  std::ifstream status(proc_status);
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

double SecondsBetween(const std::string& a, const std::string& b) {
  // ISO 8601 UTC with milliseconds from SQLite's strftime: compare within one day.
  auto seconds = [](const std::string& t) {
    return std::stod(t.substr(11, 2)) * 3600 + std::stod(t.substr(14, 2)) * 60 +
           std::stod(t.substr(17));
  };
  return seconds(b) - seconds(a);
}

int ThreadsPerProcess(const Settings& s, int sites) { return sites == 1 ? s.threads : 1; }

// The slowest site's training time in `round` (all its local epochs), from the sites'
// `event=epoch` log lines.
double SlowestTrainingSeconds(const std::vector<fs::path>& logs, int64_t round) {
  const std::regex line("event=epoch .*round=" + std::to_string(round) +
                        " .*images_per_s=([0-9.eE+-]+)");
  double slowest = 0;
  for (const fs::path& log : logs) {
    std::ifstream in(log);
    std::string text;
    std::smatch m;
    double site_seconds = 0;
    while (std::getline(in, text))
      if (std::regex_search(text, m, line)) site_seconds += kTrainPerSite / std::stod(m[1]);
    slowest = std::max(slowest, site_seconds);
  }
  return slowest;
}

struct FederatedResult {
  double train_images_per_s = 0;
  double round_images_per_s = 0;
  double bytes_per_image = 0;
  double coordinator_peak_mib = 0;
};

// Round 2's rates and bytes from the run store.
FederatedResult Measure(RunStore& store, int64_t run_id, int sites, int epochs,
                        double train_seconds) {
  const auto rounds = *store.Rounds(run_id);
  const auto metrics = *store.Metrics(run_id);
  FederatedResult r;
  const double trained = static_cast<double>(sites) * kTrainPerSite * epochs;
  r.train_images_per_s = trained / train_seconds;
  r.round_images_per_s = trained / SecondsBetween(rounds[1].started_at, rounds[1].finished_at);
  int64_t bytes = 0;
  for (const SiteRoundMetrics& m : metrics)
    if (m.round == 2) bytes += m.bytes_in + m.bytes_out;
  r.bytes_per_image = static_cast<double>(bytes) / trained;
  return r;
}

// Starts `splitfed ARGS...` with stdout and stderr in files.
pid_t Spawn(const std::string& splitfed, const std::vector<std::string>& args,
            const fs::path& out, const fs::path& err) {
  std::fflush(stdout);  // a forked child must not print this process's buffered output
  const pid_t pid = fork();
  if (pid == 0) {
    freopen(err.c_str(), "w", stderr);
    freopen(out.c_str(), "w", stdout);
    std::vector<char*> argv = {const_cast<char*>(splitfed.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(splitfed.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// The coordinator's port, once its "waiting for ... on port N" line appears.
int WaitForPort(const fs::path& out) {
  const std::regex line("on port ([0-9]+)");
  for (int tries = 0; tries < 600; ++tries) {
    std::ifstream in(out);
    std::string text;
    std::smatch m;
    while (std::getline(in, text))
      if (std::regex_search(text, m, line)) return std::stoi(m[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("the coordinator did not start (see " + out.string() + ")");
}

// Everything in its own process, as in production: `splitfed coordinator` and one
// `splitfed client` per site, over mutual TLS on loopback.
FederatedResult RunOverTls(const Settings& s, int sites, WireEncoding encoding,
                           const fs::path& dir) {
  fs::remove_all(dir);
  KitOptions kit;
  kit.out_dir = (dir / "kit").string();
  for (int i = 0; i < sites; ++i) kit.sites.push_back("site" + std::to_string(i));
  if (auto st = ProvisionFederation(kit); !st.ok())
    throw std::runtime_error(std::string(st.message()));
  const std::string threads = std::to_string(ThreadsPerProcess(s, sites));
  const fs::path db = dir / "run.db";
  const pid_t coordinator = Spawn(
      s.splitfed,
      {"coordinator", "--config", (dir / "kit/coordinator/coordinator.toml").string(),
       "--listen", "127.0.0.1:0", "--rounds", "2", "--local-epochs", std::to_string(s.epochs), "--min-sites", std::to_string(sites),
       "--image-size", std::to_string(kSize), "--activation-encoding",
       encoding == WireEncoding::kFp16 ? "fp16" : "fp32", "--db", db.string(), "--threads",
       threads},
      dir / "coordinator.out", dir / "coordinator.log");
  const std::string address = "127.0.0.1:" + std::to_string(WaitForPort(dir / "coordinator.out"));
  std::vector<pid_t> children;
  std::vector<fs::path> logs;
  for (int i = 0; i < sites; ++i) {
    logs.push_back(dir / (kit.sites[i] + ".log"));
    children.push_back(Spawn(
        s.splitfed,
        {"client", "--config", (dir / "kit/sites" / kit.sites[i] / "site.toml").string(),
         "--coordinator", address, "--phantom", std::to_string(kImagesPerSite), "--seed",
         std::to_string(i + 1), "--threads", threads},
        "/dev/null", logs.back()));
  }
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  // The coordinator's peak memory is its VmHWM, read until it exits (rusage's maxrss would
  // include this process's size at fork time).
  int status = 0;
  double peak_mib = 0;
  while (waitpid(coordinator, &status, WNOHANG) == 0) {
    peak_mib = std::max(peak_mib, PeakRssMiB("/proc/" + std::to_string(coordinator) + "/status"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("the coordinator failed (see " + (dir / "coordinator.log").string() +
                             ")");
  auto store = *RunStore::Open(db.string());
  const auto runs = *store->Runs();
  FederatedResult r =
      Measure(*store, runs.back().id, sites, s.epochs, SlowestTrainingSeconds(logs, 2));
  r.coordinator_peak_mib = peak_mib;
  return r;
}

// Sites as SiteClient threads in this process, over the coordinator's in-process channel.
FederatedResult RunInProcess(const Settings& s, int sites, const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream("/proc/self/clear_refs") << "5";  // restart the peak-RSS count (VmHWM)
  torch::set_num_threads(std::max(1, s.threads / sites));
  RunOptions o;
  o.rounds = 2;  // round 1 warms up (allocator, connections); round 2 is measured
  o.local_epochs = s.epochs;
  for (int i = 0; i < sites; ++i) o.enrolled_sites.push_back("site" + std::to_string(i));
  o.min_sites = sites;
  o.image_size = kSize;
  auto store = *RunStore::Open((dir / "run.db").string());
  auto coordinator = *Coordinator::Create(o, store.get());
  auto server = *CoordinatorServer::Start(coordinator.get(), store.get(), "", std::nullopt);
  std::mutex mutex;
  std::vector<double> training_seconds(sites, 0.0);
  std::vector<std::unique_ptr<SiteClient>> clients;
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> runs;
  for (int i = 0; i < sites; ++i) {
    SiteClientOptions c;
    c.channel = server->InProcessChannel();
    c.insecure_site_name = o.enrolled_sites[i];
    c.heartbeat_seconds = 0;
    c.load_data = [i](const DataRequest&) -> absl::StatusOr<SegmentationSet> {
      PhantomOptions p;  // what `splitfed client --phantom 160 --seed i+1` generates
      p.count = kImagesPerSite;
      p.height = p.width = kSize;
      p.seed = i + 1;
      return GeneratePhantoms(p);
    };
    c.on_epoch = [&, i](const EpochReport& e) {
      if (e.round != 2) return;
      std::lock_guard<std::mutex> lock(mutex);
      training_seconds[i] += e.seconds;
    };
    clients.push_back(std::make_unique<SiteClient>(c));
    runs.push_back(std::async(std::launch::async,
                              [client = clients.back().get()] { return client->Run(); }));
  }
  const absl::Status status = coordinator->Run();
  for (auto& r : runs) r.get().IgnoreError();
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
  FederatedResult r =
      Measure(*store, coordinator->run_id(), sites, s.epochs,
              *std::max_element(training_seconds.begin(), training_seconds.end()));
  r.coordinator_peak_mib = PeakRssMiB();  // the whole process: coordinator and sites
  server->Shutdown();
  return r;
}

double RunCentralized(const Settings& s, int sites) {
  torch::set_num_threads(s.threads);
  torch::manual_seed(1);
  RunOptions o;
  SplitModel m = MakeSplitModel(o.model, o.split);
  PhantomOptions p;
  // The images of up to 4 sites: enough for a steady rate (images/s does not depend on it).
  p.count = std::min(sites, 4) * kTrainPerSite;
  p.height = p.width = kSize;
  const SegmentationSet set = *GeneratePhantoms(p);
  TrainerOptions t;
  SiteTrainer trainer(m.front, m.back, t);
  LocalBody body(m.body, t.learning_rate);
  trainer.TrainEpoch(set, 1, body).IgnoreError();  // warm-up
  double images = 0, seconds = 0;
  for (int epoch = 0; epoch < s.epochs; ++epoch) {
    const absl::StatusOr<EpochStats> stats = trainer.TrainEpoch(set, 2 + epoch, body);
    images += stats->images;
    seconds += stats->seconds;
  }
  return images / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  // The same OpenMP spin policy as `splitfed` (for the in-process runs; centralized training
  // was measured not to depend on it, docs/PERFORMANCE.md).
  ShortenOpenMpSpin(argv);
  Settings s;
  CLI::App app{"SplitFed federation throughput: centralized vs mTLS vs in-process"};
  app.add_option("splitfed", s.splitfed, "Path to the splitfed executable")->required();
  app.add_option("--out", s.out, "JSON results");
  app.add_option("--threads", s.threads, "Core budget: torch threads of centralized training");
  app.add_option("--sites", s.sites, "Site counts")->delimiter(',');
  app.add_option("--repeats", s.repeats, "Repeats of every measurement");
  app.add_option("--epochs", s.epochs,
                 "Timed local epochs per site (and epochs of centralized training)")
      ->check(CLI::PositiveNumber);
  app.add_option("--transports", s.transports, "mtls, inprocess")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  KeepTrainingBuffersInHeap();
  FLAGS_minloglevel = 2;  // keep the table readable
  const fs::path dir = fs::temp_directory_path() / ("splitfed_bench_" + std::to_string(getpid()));
  const bool tls = std::count(s.transports.begin(), s.transports.end(), "mtls") > 0;
  const bool inprocess = std::count(s.transports.begin(), s.transports.end(), "inprocess") > 0;

  nlohmann::json runs = nlohmann::json::array();
  std::printf("%-6s %-7s %-10s %-5s %12s %12s %12s %8s %12s %10s\n", "repeat", "sites",
              "transport", "acts", "central", "train img/s", "round img/s", "ratio",
              "bytes/image", "coord MiB");
  auto record = [&](int repeat, int sites, const char* transport, const char* acts,
                    double central, const FederatedResult& f) {
    const double ratio = f.train_images_per_s / central;
    std::printf("%-6d %-7d %-10s %-5s %12.1f %12.1f %12.1f %8.3f %12.0f %10.0f\n", repeat, sites,
                transport, acts, central, f.train_images_per_s, f.round_images_per_s, ratio,
                f.bytes_per_image, f.coordinator_peak_mib);
    std::fflush(stdout);
    runs.push_back({{"repeat", repeat},
                    {"sites", sites},
                    {"transport", transport},
                    {"activations", acts},
                    {"centralized_images_per_s", central},
                    {"train_images_per_s", f.train_images_per_s},
                    {"round_images_per_s", f.round_images_per_s},
                    {"ratio", ratio},
                    {"round_ratio", f.round_images_per_s / central},
                    {"bytes_per_image", f.bytes_per_image},
                    {"coordinator_peak_rss_mib", f.coordinator_peak_mib}});
  };
  for (int repeat = 1; repeat <= s.repeats; ++repeat) {
    for (int sites : s.sites) {
      // Every federated run sits between two centralized runs and is compared with their
      // mean: this machine's speed drifts within minutes.
      double before = RunCentralized(s, sites);
      auto measure = [&](const char* transport, const char* acts, const FederatedResult& f) {
        const double after = RunCentralized(s, sites);
        record(repeat, sites, transport, acts, (before + after) / 2, f);
        before = after;
      };
      if (tls) {
        measure("mtls", "fp32", RunOverTls(s, sites, WireEncoding::kFp32, dir));
        if (sites <= 4) measure("mtls", "fp16", RunOverTls(s, sites, WireEncoding::kFp16, dir));
      }
      if (inprocess && sites <= 4) measure("inprocess", "fp32", RunInProcess(s, sites, dir));
    }
  }
  // Medians over repeats, per (sites, transport, activations).
  nlohmann::json summary = nlohmann::json::array();
  std::printf("\nmedian over %d repeats\n%-7s %-10s %-5s %12s %12s %10s %12s\n", s.repeats,
              "sites", "transport", "acts", "train ratio", "round ratio", "min ratio",
              "bytes/image");
  std::map<std::tuple<int, std::string, std::string>, std::vector<const nlohmann::json*>> groups;
  for (const auto& r : runs)
    groups[{r["sites"].get<int>(), r["transport"], r["activations"]}].push_back(&r);
  for (const auto& [key, rs] : groups) {
    std::vector<double> ratio, round_ratio;
    for (const auto* r : rs) {
      ratio.push_back((*r)["ratio"]);
      round_ratio.push_back((*r)["round_ratio"]);
    }
    const auto& [sites, transport, acts] = key;
    const double min_ratio = *std::min_element(ratio.begin(), ratio.end());
    std::printf("%-7d %-10s %-5s %12.3f %12.3f %10.3f %12.0f\n", sites, transport.c_str(),
                acts.c_str(), Median(ratio), Median(round_ratio), min_ratio,
                rs.front()->at("bytes_per_image").get<double>());
    summary.push_back({{"sites", sites},
                       {"transport", transport},
                       {"activations", acts},
                       {"median_ratio", Median(ratio)},
                       {"median_round_ratio", Median(round_ratio)},
                       {"min_ratio", min_ratio}});
  }
  fs::remove_all(dir);
  nlohmann::json out = {{"threads", s.threads}, {"image_size", kSize},
                        {"train_images_per_site", kTrainPerSite}, {"epochs", s.epochs}, {"runs", runs},
                        {"summary", summary}};
  std::ofstream(s.out) << out.dump(2) << "\n";
  std::printf("wrote %s\n", s.out.c_str());
  return 0;
}
