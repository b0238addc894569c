// `splitfed sim`: a whole federation on this machine, label noise injected per site, methods
// compared. With no --config it runs the built-in experiment (docs/SIMULATOR.md).
#include <CLI/CLI.hpp>
#include <glog/logging.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/signal_watch.h"
#include "sim/experiment.h"
#include "sim/runner.h"

namespace splitfed::cli {
namespace {

struct SimFlags {
  std::string config, out, seeds, resume, only;
  int64_t rounds = 0;
  int threads = 0;
  bool quiet = false, verbose = false;
};

std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 60 ? absl::StrFormat("%dm%02ds", s / 60, s % 60) : absl::StrFormat("%ds", s);
}

// One status line on a terminal (redrawn in place), or a line per closed round otherwise.
class ProgressLine {
 public:
  ProgressLine(const sim::ExperimentConfig& c, size_t runs, bool quiet)
      : quiet_(quiet),
        tty_(::isatty(STDERR_FILENO)),
        total_(static_cast<double>(runs) * c.rounds * c.sites * c.local_epochs),
        start_(std::chrono::steady_clock::now()) {}

  void Report(const sim::ProgressEvent& e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (e.epoch > 0) {
      done_ += 1;
      last_site_ = absl::StrFormat("%s loss %.3f", e.site, e.loss);
    }
    if (e.round_closed) last_dice_ = absl::StrFormat(" · test Dice %.3f", e.test_dice);
    if (quiet_) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = total_ > 0 ? done_ / total_ : 0;
    const std::string eta =
        done_ > 0 ? Duration(elapsed / done_ * (total_ - done_)) : std::string("?");
    const std::string line = absl::StrFormat(
        "[run %d/%d] %s | %s | seed %d · round %d/%d · %s%s · %3.0f%% · ETA %s", e.run_index,
        e.run_count, e.method, e.noise, e.seed, e.round, e.rounds, last_site_, last_dice_,
        100 * fraction, eta);
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      if (e.round_closed && e.round == e.rounds) std::fputc('\n', stderr);
    } else if (e.round_closed) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }

 private:
  std::mutex mutex_;
  bool quiet_, tty_;
  double total_, done_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::string last_site_ = "starting", last_dice_;
};

void RunSim(const SimFlags& f) {
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = f.verbose ? 0 : 2;  // the sites' and coordinator's logs only on request
  google::InitGoogleLogging("splitfed");
  if (!f.resume.empty() && (!f.config.empty() || !f.out.empty() || f.rounds > 0 || !f.seeds.empty()))
    throw std::invalid_argument(
        "--resume continues the experiment as its folder's config.toml describes it: "
        "--config, --out, --rounds and --seeds cannot change it");
  sim::RunFilter filter;
  filter.resume = !f.resume.empty();
  if (!f.only.empty())
    filter.only_methods = absl::StrSplit(f.only, ',', absl::SkipWhitespace());
  sim::ExperimentConfig config;
  if (filter.resume) {
    const std::filesystem::path saved = std::filesystem::path(f.resume) / "config.toml";
    if (!std::filesystem::exists(saved))
      throw std::invalid_argument("--resume " + f.resume +
                                  ": no config.toml there (is it a `splitfed sim` output folder?)");
    config = Unwrap(sim::LoadExperiment(saved.string()));
    config.out_dir = f.resume;  // the folder, wherever it has moved since
  } else {
    config = f.config.empty() ? sim::DefaultExperiment() : Unwrap(sim::LoadExperiment(f.config));
  }
  if (!f.out.empty()) config.out_dir = f.out;
  config.out_dir = std::filesystem::absolute(config.out_dir).lexically_normal().string();
  if (f.rounds > 0) config.rounds = f.rounds;
  if (f.threads > 0) config.threads = f.threads;
  if (!f.seeds.empty()) {
    config.seeds.clear();
    for (const std::string& s : std::vector<std::string>(absl::StrSplit(f.seeds, ','))) {
      uint64_t seed;
      if (!absl::SimpleAtoi(s, &seed)) throw std::invalid_argument("--seeds: '" + s + "' is not a seed");
      config.seeds.push_back(seed);
    }
  }
  Check(sim::ValidateExperiment(config));
  const size_t planned = sim::PlanRuns(config).size();
  const size_t runs = Unwrap(sim::SelectRuns(config, filter)).size();
  std::fprintf(stderr, "splitfed sim: %s: %zu runs (%zu methods, %zu noise settings, %zu seeds), "
                       "%lld sites, %lld rounds; results in %s\n",
               config.name.c_str(), planned, config.methods.size(), config.noise.size(),
               config.seeds.size(), static_cast<long long>(config.sites),
               static_cast<long long>(config.rounds), config.out_dir.c_str());
  if (runs != planned)
    std::fprintf(stderr, "splitfed sim: running %zu of them (%s)\n", runs,
                 filter.resume ? "the others are recorded already or left to --only"
                               : "--only");

  ProgressLine progress(config, runs, f.quiet);
  sim::ExperimentRunner runner(config, [&](const sim::ProgressEvent& e) { progress.Report(e); },
                               filter);
  bool interrupted = false;
  SignalWatch watch([&](int) {
    interrupted = true;
    std::fprintf(stderr, "\nsplitfed sim: stopping; finished runs are kept\n");
    runner.Stop();
  });
  const std::vector<sim::RunResult> finished = Unwrap(runner.Run());
  const std::filesystem::path out(config.out_dir);
  std::ifstream summary(out / "summary.md");
  if (summary) std::cout << "\n" << summary.rdbuf() << "\n";
  double seconds = 0, images = 0;
  for (const sim::RunResult& r : finished) seconds += r.seconds, images += r.images_trained;
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  std::printf("%zu of %zu runs finished in %s (%.1f training images/s, peak memory %.0f MiB).\n"
              "Results: %s (summary.md, summary.json, runs.csv, rounds.csv, site_rounds.csv, "
              "plots/, preview/, models/)\n",
              finished.size(), runs, Duration(seconds).c_str(),
              seconds > 0 ? images / seconds : 0.0, usage.ru_maxrss / 1024.0,
              out.string().c_str());
  if (interrupted) throw std::runtime_error("interrupted");
}

}  // namespace

void AddSimCommand(CLI::App& app) {
  auto f = std::make_shared<SimFlags>();
  CLI::App* c = app.add_subcommand(
      "sim", "Simulate a federation on this machine: label noise per site, methods compared");
  c->add_option("--config", f->config, "Experiment file (TOML); default: the built-in experiment")
      ->check(CLI::ExistingFile);
  c->add_option("--out", f->out, "Output folder (overrides the file's `out`)");
  c->add_option("--rounds", f->rounds, "Rounds per run (overrides the file)")
      ->check(CLI::Range(1, 100000));
  c->add_option("--seeds", f->seeds, "Comma-separated seeds (override the file)");
  c->add_option("--resume", f->resume,
                "Continue the experiment in this output folder: the runs it records are kept "
                "and skipped")
      ->check(CLI::ExistingDirectory);
  c->add_option("--only", f->only,
                "Comma-separated methods: run only these (the folder's other records stay), e.g. "
                "to split one experiment over several processes or sittings");
  c->add_option("--threads", f->threads, "Torch intra-op threads (0: the file's, or cores / sites)")
      ->check(CLI::Range(0, 1024));
  c->add_flag("--quiet", f->quiet, "No progress line");
  c->add_flag("--verbose", f->verbose, "Also print the sites' and coordinator's logs");
  c->callback([f] { RunSim(*f); });
}

}  // namespace splitfed::cli
