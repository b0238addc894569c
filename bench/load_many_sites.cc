// Load: one coordinator and many sites over mutual TLS on loopback, every site its own
// SiteClient thread with its own certificate and connection, in this one process. Small
// images and a small U-Net keep the work per site tiny, so what is measured is the
// coordinator's handling of many sites: joins, long-polls, the Split streams, updates, the
// aggregation and the store. Checks that nothing is lost (every site completes every round,
// every round is in the store with every site included) and reports the wall time, each
// round's duration and the process's peak memory (coordinator and all the sites together).
// Exits 1 if anything was lost.
//
// Usage: bench_load_many_sites [--sites 64] [--rounds 10] [--size 16] [--images 10]
//          [--out bench/results/load_64_sites.json]
#include <glog/logging.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "client/site_client.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "provision/federation_kit.h"
#include "store/run_store.h"

namespace {
namespace fs = std::filesystem;
using namespace splitfed;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Many sites over mutual TLS: nothing lost, time and memory");
  int sites = 64, rounds = 10, size = 16, images = 10;
  std::string out = "bench/results/load_64_sites.json";
  app.add_option("--sites", sites)->check(CLI::Range(1, 1000));
  app.add_option("--rounds", rounds)->check(CLI::Range(1, 1000));
  app.add_option("--size", size)->check(CLI::Range(8, 256));
  app.add_option("--images", images, "Images per site (a fifth for validation)")
      ->check(CLI::Range(4, 10000));
  app.add_option("--out", out);
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  FLAGS_minloglevel = 1;  // warnings and errors only: 64 sites log a great deal

  const fs::path dir = fs::temp_directory_path() / ("splitfed_load_" + std::to_string(getpid()));
  fs::remove_all(dir);
  KitOptions kit;
  kit.out_dir = (dir / "kit").string();
  for (int i = 1; i <= sites; ++i) kit.sites.push_back("site-" + std::to_string(i));
  const auto start = std::chrono::steady_clock::now();
  if (auto s = ProvisionFederation(kit); !s.ok()) {
    std::fprintf(stderr, "provision: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double provision_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  RunOptions options;
  options.run_name = "load";
  options.rounds = rounds;
  options.enrolled_sites = kit.sites;
  options.min_sites = sites;
  options.local_epochs = 1;
  options.batch_size = 4;
  options.learning_rate = 1e-3;
  options.model.base_width = 4;
  options.model.depth = 2;
  options.image_size = size;
  options.checkpoint_dir = (dir / "checkpoints").string();
  auto store = RunStore::Open((dir / "run.db").string());
  auto coordinator = store.ok() ? Coordinator::Create(options, store->get())
                                : absl::StatusOr<std::unique_ptr<Coordinator>>(store.status());
  if (!coordinator.ok()) {
    std::fprintf(stderr, "coordinator: %s\n", std::string(coordinator.status().message()).c_str());
    return 1;
  }
  const fs::path ck = dir / "kit/coordinator";
  auto tls = ReadTlsFiles((ck / "coordinator.crt").string(), (ck / "coordinator.key").string(),
                          (ck / "ca.crt").string());
  if (tls.ok()) tls->revocation_list_path = (ck / "revoked.crl").string();
  auto server = tls.ok() ? CoordinatorServer::Start(coordinator->get(), store->get(),
                                                    "127.0.0.1:0", *tls)
                         : absl::StatusOr<std::unique_ptr<CoordinatorServer>>(tls.status());
  if (!server.ok()) {
    std::fprintf(stderr, "server: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());
  const auto run_start = std::chrono::steady_clock::now();
  auto run = std::async(std::launch::async, [&] { return (*coordinator)->Run(); });
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> clients;
  for (int i = 0; i < sites; ++i) {
    const fs::path k = dir / "kit/sites" / kit.sites[i];
    SiteClientOptions o;
    o.coordinator = address;
    o.tls = ClientTls{ReadText(k / "site.crt"), ReadText(k / "site.key"), ReadText(k / "ca.crt"), ""};
    o.max_reconnects = 3;
    o.initial_backoff_seconds = 0.2;
    o.load_data = PhantomLoader(i + 1, images);
    clients.push_back(std::async(std::launch::async, [o = std::move(o)] {
      return SiteClient(o).Run();
    }));
  }
  const absl::Status run_status = run.get();
  const double run_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();

  int sites_ok = 0;
  for (auto& c : clients) {
    const auto summary = c.get();
    if (summary.ok() && summary->rounds_completed == rounds) ++sites_ok;
    else if (!summary.ok())
      std::fprintf(stderr, "a site failed: %s\n", std::string(summary.status().message()).c_str());
  }
  const int64_t run_id = (*coordinator)->run_id();
  const auto recorded = (*store)->Rounds(run_id);
  const auto metrics = (*store)->Metrics(run_id);
  int completed = 0, included = 0;
  std::vector<double> durations;
  if (recorded.ok())
    for (const RoundRecord& r : *recorded) {
      completed += r.state == "completed";
      durations.push_back(SecondsBetween(r.started_at, r.finished_at).value_or(-1));
    }
  if (metrics.ok())
    for (const SiteRoundMetrics& m : *metrics) included += m.included;
  const bool nothing_lost = run_status.ok() && sites_ok == sites && completed == rounds &&
                            included == sites * rounds;

  nlohmann::json result = {
      {"sites", sites}, {"rounds", rounds}, {"image_size", size}, {"images_per_site", images},
      {"transport", "mutual TLS on 127.0.0.1, one connection per site"},
      {"provision_seconds", provision_seconds}, {"run_seconds", run_seconds},
      {"round_seconds", durations}, {"peak_rss_mib", PeakRssMiB()},
      {"sites_completing_every_round", sites_ok}, {"rounds_completed_in_store", completed},
      {"site_rounds_included", included}, {"nothing_lost", nothing_lost},
      {"run_status", run_status.ok() ? "ok" : std::string(run_status.message())}};
  std::printf("%d sites, %d rounds over mutual TLS: run %.1f s (provisioning %.1f s), "
              "peak RSS %.0f MiB (coordinator and sites in one process)\n",
              sites, rounds, run_seconds, provision_seconds, PeakRssMiB());
  std::printf("round seconds:");
  for (double d : durations) std::printf(" %.2f", d);
  std::printf("\nsites completing every round %d/%d, rounds completed in the store %d/%d, "
              "site-rounds included %d/%d: %s\n",
              sites_ok, sites, completed, rounds, included, sites * rounds,
              nothing_lost ? "nothing lost" : "SOMETHING WAS LOST");
  if (!out.empty()) {
    fs::create_directories(fs::path(out).parent_path());
    std::ofstream(out) << result.dump(2) << "\n";
  }
  server->reset();
  coordinator->reset();
  store->reset();
  fs::remove_all(dir);
  return nothing_lost ? 0 : 1;
}
