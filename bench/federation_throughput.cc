// The federation over mutual TLS on loopback, measured end to end with real processes: the
// coordinator runs in this process, each site is a `splitfed client` process. Reports
// training images/s of a steady round against centralized training of the same U-Net on the
// same images, bytes on the wire per image (fp32 and fp16 activations), and the
// coordinator's peak memory for several site counts. Prints a table and writes JSON.
//
// Usage: bench_federation_throughput PATH_TO_splitfed [out.json] [threads]
//
// Threads: centralized training uses 2 torch threads. In a federated run the coordinator
// process and each site process use `threads` torch threads (default 2): for one site the two
// sides of the cut take turns (a site waits while the coordinator computes and vice versa), so
// each can use both cores; with more sites, all processes share the 2 cores.
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "datasets/phantom.h"
#include "provision/federation_kit.h"
#include "split/allocator.h"
#include "split/trainer.h"

namespace {
namespace fs = std::filesystem;
using namespace splitfed;

constexpr int64_t kImagesPerSite = 160;  // 128 train + 32 validation at each site
constexpr int64_t kTrainPerSite = 128;
constexpr int64_t kSize = 64;
int g_threads = 2;  // torch threads of the coordinator and of each site process

double PeakRssMiB() {
  std::ifstream status("/proc/self/status");
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

struct FederatedResult {
  double images_per_s = 0;
  double bytes_per_image = 0;
  double coordinator_peak_mib = 0;
};

FederatedResult RunFederated(const std::string& splitfed, int sites, WireEncoding encoding,
                             const fs::path& dir) {
  fs::remove_all(dir);
  std::ofstream("/proc/self/clear_refs") << "5";  // restart the peak-RSS count (VmHWM)
  KitOptions kit;
  kit.out_dir = (dir / "kit").string();
  for (int i = 0; i < sites; ++i) kit.sites.push_back("site" + std::to_string(i));
  if (auto s = ProvisionFederation(kit); !s.ok()) throw std::runtime_error(std::string(s.message()));
  RunOptions o;
  o.rounds = 2;  // round 1 warms up (allocator, connections); round 2 is measured
  o.enrolled_sites = kit.sites;
  o.min_sites = sites;
  o.image_size = kSize;
  o.activation_encoding = encoding;
  o.round_open_wait_seconds = 30;
  auto store = *RunStore::Open((dir / "run.db").string());
  auto coordinator = *Coordinator::Create(o, store.get());
  const fs::path k = dir / "kit/coordinator";
  auto tls = *ReadTlsFiles((k / "coordinator.crt").string(), (k / "coordinator.key").string(),
                           (k / "ca.crt").string());
  auto server = *CoordinatorServer::Start(coordinator.get(), store.get(), "127.0.0.1:0", tls);
  std::vector<pid_t> children;
  for (int i = 0; i < sites; ++i) {
    const std::string config = (dir / "kit/sites" / kit.sites[i] / "site.toml").string();
    const std::string address = "127.0.0.1:" + std::to_string(server->port());
    const std::string seed = std::to_string(i + 1);
    const std::string count = std::to_string(kImagesPerSite);
    std::fflush(stdout);  // a forked child must not print this process's buffered output
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string log = (dir / (kit.sites[i] + ".log")).string();
      freopen(log.c_str(), "w", stderr);
      freopen("/dev/null", "w", stdout);
      execl(splitfed.c_str(), splitfed.c_str(), "client", "--config", config.c_str(),
            "--coordinator", address.c_str(), "--phantom", count.c_str(), "--seed", seed.c_str(),
            "--threads", std::to_string(g_threads).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    children.push_back(pid);
  }
  const absl::Status status = coordinator->Run();
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
  const auto rounds = *store->Rounds(coordinator->run_id());
  const auto metrics = *store->Metrics(coordinator->run_id());
  FederatedResult r;
  const double seconds = SecondsBetween(rounds[1].started_at, rounds[1].finished_at);
  r.images_per_s = sites * kTrainPerSite / seconds;
  int64_t bytes = 0;
  for (const SiteRoundMetrics& m : metrics)
    if (m.round == 2) bytes += m.bytes_in + m.bytes_out;
  r.bytes_per_image = static_cast<double>(bytes) / (sites * kTrainPerSite);
  r.coordinator_peak_mib = PeakRssMiB();
  server->Shutdown();
  return r;
}

double RunCentralized(int sites) {
  torch::set_num_threads(2);
  torch::manual_seed(1);
  RunOptions o;
  SplitModel m = MakeSplitModel(o.model, o.split);
  PhantomOptions p;
  p.count = sites * kTrainPerSite;
  p.height = p.width = kSize;
  const SegmentationSet set = *GeneratePhantoms(p);
  TrainerOptions t;
  SiteTrainer trainer(m.front, m.back, t);
  LocalBody body(m.body, t.learning_rate);
  trainer.TrainEpoch(set, 1, body).IgnoreError();  // warm-up
  const absl::StatusOr<EpochStats> stats = trainer.TrainEpoch(set, 2, body);
  return stats->images / stats->seconds;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH_TO_splitfed [out.json] [threads]\n", argv[0]);
    return 2;
  }
  KeepTrainingBuffersInHeap();
  FLAGS_minloglevel = 2;  // keep the table readable
  const std::string splitfed = argv[1];
  const std::string out = argc > 2 ? argv[2] : "bench_federation_throughput.json";
  if (argc > 3) g_threads = std::stoi(argv[3]);
  const fs::path dir = fs::temp_directory_path() / ("splitfed_bench_" + std::to_string(getpid()));
  nlohmann::json results = nlohmann::json::array();
  std::printf("%-6s %-6s %16s %16s %8s %16s %14s\n", "sites", "acts", "central img/s",
              "mTLS img/s", "ratio", "bytes/image", "coord peak MiB");
  for (int sites : {1, 4, 16}) {
    for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16}) {
      if (sites == 16 && e == WireEncoding::kFp16) continue;
      const double central = RunCentralized(sites);
      torch::set_num_threads(g_threads);
      const FederatedResult f = RunFederated(splitfed, sites, e, dir);
      const char* name = e == WireEncoding::kFp16 ? "fp16" : "fp32";
      std::printf("%-6d %-6s %16.1f %16.1f %8.3f %16.0f %14.0f\n", sites, name, central,
                  f.images_per_s, f.images_per_s / central, f.bytes_per_image,
                  f.coordinator_peak_mib);
      std::fflush(stdout);
      results.push_back({{"sites", sites},
                         {"activations", name},
                         {"centralized_images_per_s", central},
                         {"federated_images_per_s", f.images_per_s},
                         {"ratio", f.images_per_s / central},
                         {"bytes_per_image", f.bytes_per_image},
                         {"coordinator_peak_rss_mib", f.coordinator_peak_mib},
                         {"image_size", kSize},
                         {"train_images_per_site", kTrainPerSite}});
    }
  }
  fs::remove_all(dir);
  std::ofstream(out) << results.dump(2) << "\n";
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
