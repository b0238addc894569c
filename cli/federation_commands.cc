// `splitfed coordinator`, `splitfed client`, `splitfed status`: the federation from the
// command line. Configuration comes from the TOML files `splitfed provision` writes; flags
// override them.
#include <CLI/CLI.hpp>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/signal_watch.h"
#include "client/site_client.h"
#include "config/method_table.h"
#include "config/toml_reader.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "monitor/monitor_server.h"
#include "datasets/folder_dataset.h"
#include "datasets/phantom.h"
#include "proto/state_codec.h"
#include "splitfed/v1/federation.grpc.pb.h"

namespace splitfed::cli {
namespace {

using config::TomlTable;


void InitLogging() {
  static bool done = false;
  if (done) return;
  done = true;
  FLAGS_logtostderr = true;
  google::InitGoogleLogging("splitfed");
}

// ---- coordinator ---------------------------------------------------------------------------

struct CoordinatorFlags {
  std::string config, listen, db, checkpoints, sites, split, encoding, mode, method, monitor;
  int64_t rounds = -1, min_sites = -1, local_epochs = -1, image_size = -1, batch_size = -1;
  double deadline = -1, learning_rate = -1;
  int64_t seed = -1;
  int threads = 0;
  bool insecure = false;
  bool new_run = false;
};

// The [tls] table every kit file has: the holder's certificate and key, and the run's CA;
// a client's may name the coordinator (target_name), the coordinator's its revocation list.
struct TlsPaths {
  std::string certificate, private_key, ca_certificate, target_name, revocation_list;
};

TlsPaths ReadTlsTable(TomlTable& file, bool coordinator) {
  TomlTable t = Unwrap(file.Table("tls"));
  TlsPaths p;
  Check(t.Path("certificate", &p.certificate));
  Check(t.Path("private_key", &p.private_key));
  Check(t.Path("ca_certificate", &p.ca_certificate));
  if (coordinator) {
    Check(t.Path("revocation_list", &p.revocation_list));
  } else {
    Check(t.String("target_name", &p.target_name));
  }
  Check(t.RejectUnknown());
  return p;
}

TlsFiles LoadTls(const TlsPaths& p) {
  TlsFiles files = Unwrap(ReadTlsFiles(p.certificate, p.private_key, p.ca_certificate));
  files.revocation_list_path = p.revocation_list;
  return files;
}

// coordinator.toml: top-level listen / database / checkpoints / enrolled_sites, then [tls],
// [run], [method] (the schema experiment files share, config/method_table.h) and [model].
struct CoordinatorFile {
  RunOptions run;
  std::string listen = "127.0.0.1:50051";
  std::string database = "coordinator.db";
  std::string encoding = "fp32", mode = "sflv1", split = "deep";
  std::string monitor_listen;  // [monitor] listen; empty: no HTTP port at all
  TlsPaths tls;
};

CoordinatorFile ReadCoordinatorFile(const std::string& path) {
  const config::TomlDocument doc = Unwrap(config::TomlDocument::ReadFile(path));
  TomlTable top = doc.Root();
  CoordinatorFile c;
  RunOptions& o = c.run;
  o.checkpoint_dir = "checkpoints";
  Check(top.String("listen", &c.listen));
  Check(top.Path("database", &c.database));
  Check(top.Path("checkpoints", &o.checkpoint_dir));
  Check(top.Strings("enrolled_sites", &o.enrolled_sites));
  c.tls = ReadTlsTable(top, /*coordinator=*/true);
  TomlTable run = Unwrap(top.Table("run"));
  TomlTable method = Unwrap(top.Table("method"));
  TomlTable model = Unwrap(top.Table("model"));
  TomlTable monitor = Unwrap(top.Table("monitor"));
  Check(top.RejectUnknown());
  Check(monitor.String("listen", &c.monitor_listen));
  Check(monitor.RejectUnknown());

  o.run_name = "run";
  o.rounds = 5;
  o.min_sites = -1;  // all enrolled sites unless said
  o.local_epochs = 1;
  o.batch_size = 8;
  o.learning_rate = 1e-3;
  o.round_deadline_seconds = 600;
  o.seed = 1;
  Check(run.String("name", &o.run_name));
  Check(run.Int("rounds", &o.rounds, 1, 100000));
  Check(run.Int("min_sites", &o.min_sites, 1, 100000));
  Check(run.Int("local_epochs", &o.local_epochs, 1, 1000));
  Check(run.Int("batch_size", &o.batch_size, 2, 4096));
  Check(run.Double("learning_rate", &o.learning_rate, 1e-9, 10));
  Check(run.Double("round_deadline_seconds", &o.round_deadline_seconds, 1e-3, 1e7));
  Check(run.Choice("activation_encoding", {"fp32", "fp16"}, &c.encoding));
  int64_t seed = 1;
  Check(run.Int("seed", &seed, 0, std::numeric_limits<int64_t>::max()));
  o.seed = seed;
  Check(run.String("aggregation", &o.aggregation));  // empty: the method's own rule
  Check(run.Choice("mode", {"sflv1", "sflv2"}, &c.mode));
  std::string method_name = MethodName(o.method.kind);
  Check(run.String("method", &method_name));
  Check(ParseMethod(method_name, &o.method.kind));
  Check(run.RejectUnknown());

  Check(config::ReadMethodTable(method, &o.method));
  Check(method.RejectUnknown());

  o.model = {1, 4, 16, 4};
  o.image_size = 64;
  Check(model.Int("in_channels", &o.model.in_channels, 1, 16));
  Check(model.Int("num_classes", &o.model.num_classes, 2, 256));
  Check(model.Int("base_width", &o.model.base_width, 1, 512));
  Check(model.Int("depth", &o.model.depth, 1, 6));
  Check(model.String("split", &c.split));
  Check(model.Int("image_size", &o.image_size, 16, 4096));
  Check(model.RejectUnknown());
  return c;
}

void RunCoordinator(const CoordinatorFlags& f) {
  InitLogging();
  CoordinatorFile file = ReadCoordinatorFile(f.config);
  RunOptions& o = file.run;
  // Flags override the file.
  if (f.rounds > 0) o.rounds = f.rounds;
  if (!f.sites.empty()) o.enrolled_sites = absl::StrSplit(f.sites, ',');
  if (f.min_sites > 0) o.min_sites = f.min_sites;
  if (o.min_sites < 0) o.min_sites = o.enrolled_sites.size();
  if (f.local_epochs > 0) o.local_epochs = f.local_epochs;
  if (f.batch_size > 0) o.batch_size = f.batch_size;
  if (f.learning_rate > 0) o.learning_rate = f.learning_rate;
  if (f.deadline > 0) o.round_deadline_seconds = f.deadline;
  const std::string encoding = f.encoding.empty() ? file.encoding : f.encoding;
  o.activation_encoding = Unwrap(ParseWireEncoding(encoding));
  if (f.seed >= 0) o.seed = f.seed;
  if (!f.method.empty()) Check(ParseMethod(f.method, &o.method.kind));
  o.mode = Unwrap(ParseSplitMode(f.mode.empty() ? file.mode : f.mode));
  o.split = Unwrap(SplitSpec::Parse(f.split.empty() ? file.split : f.split));
  if (f.image_size > 0) o.image_size = f.image_size;
  if (!f.checkpoints.empty()) o.checkpoint_dir = f.checkpoints;
  const std::string db = f.db.empty() ? file.database : f.db;
  const std::string listen = f.listen.empty() ? file.listen : f.listen;
  if (f.threads > 0) torch::set_num_threads(f.threads);

  std::optional<TlsFiles> tls;
  if (f.insecure) {
    std::fprintf(stderr,
                 "WARNING: --insecure: no TLS, sites are trusted by the name they send. "
                 "Loopback experiments only.\n");
  } else {
    tls = LoadTls(file.tls);
  }
  o.resume = !f.new_run;
  std::unique_ptr<RunStore> store = Unwrap(RunStore::Open(db));
  std::unique_ptr<Coordinator> coordinator = Unwrap(Coordinator::Create(o, store.get()));
  std::unique_ptr<CoordinatorServer> server =
      Unwrap(CoordinatorServer::Start(coordinator.get(), store.get(), listen, tls));
  // /metrics and the dashboard: only when asked for, each dashboard visit with the token.
  std::unique_ptr<MonitorServer> monitor;
  const std::string monitor_listen = f.monitor.empty() ? file.monitor_listen : f.monitor;
  if (!monitor_listen.empty()) {
    const std::string token = NewAccessToken();
    monitor = Unwrap(MonitorServer::Start(
        monitor_listen, [&coordinator] { return coordinator->Snapshot(); }, token));
    std::string host;
    int unused = 0;
    Check(SplitHostPort(monitor_listen, &host, &unused));
    std::printf("coordinator: metrics at http://%s:%d/metrics, dashboard at "
                "http://%s:%d/?token=%s\n",
                host.c_str(), monitor->port(), host.c_str(), monitor->port(), token.c_str());
  }
  if (coordinator->resumed())
    std::printf("coordinator: resuming run %ld after round %ld\n",
                static_cast<long>(coordinator->run_id()),
                static_cast<long>(coordinator->resumed_after_round()));
  std::printf("coordinator: run %ld, %ld rounds, waiting for %ld of %zu sites on port %d\n",
              static_cast<long>(coordinator->run_id()), static_cast<long>(o.rounds),
              static_cast<long>(o.min_sites), o.enrolled_sites.size(), server->port());
  std::fflush(stdout);
  SignalWatch watch([&](int signal) {
    LOG(INFO) << "event=signal signal=" << signal << " action=stop";
    coordinator->Stop();
  });
  const absl::Status result = coordinator->Run();
  // Let the sites hear that the run is over before the server goes away.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  server->Shutdown();
  if (monitor) monitor->Stop();
  Check(result);
  std::printf("coordinator: run %ld done; final model %s\n",
              static_cast<long>(coordinator->run_id()),
              (std::filesystem::path(o.checkpoint_dir) / "final.pt").c_str());
}

// ---- client --------------------------------------------------------------------------------

struct ClientFlags {
  std::string config, data, masks_dir, coordinator, name;
  int64_t phantom = 0;
  int64_t seed = -1;
  int threads = 0;
  bool insecure = false;
};

// site.toml: coordinator, [tls] (with target_name) and [data].
struct SiteFile {
  std::string coordinator = "127.0.0.1:50051";
  TlsPaths tls;
  std::string folder, masks = "masks";
  int64_t phantoms = 0, seed = 1;
};

SiteFile ReadSiteFile(const std::string& path) {
  const config::TomlDocument doc = Unwrap(config::TomlDocument::ReadFile(path));
  TomlTable top = doc.Root();
  SiteFile s;
  Check(top.String("coordinator", &s.coordinator));
  s.tls = ReadTlsTable(top, /*coordinator=*/false);
  TomlTable data = Unwrap(top.Table("data"));
  Check(top.RejectUnknown());
  Check(data.Path("folder", &s.folder));
  Check(data.String("masks", &s.masks));
  Check(data.Int("phantom", &s.phantoms, 0, 1000000));
  Check(data.Int("seed", &s.seed, 0, std::numeric_limits<int64_t>::max()));
  Check(data.RejectUnknown());
  return s;
}

void RunClient(const ClientFlags& f) {
  InitLogging();
  const SiteFile file = ReadSiteFile(f.config);
  SiteClientOptions o;
  o.coordinator = f.coordinator.empty() ? file.coordinator : f.coordinator;
  if (f.insecure) {
    if (f.name.empty()) throw std::invalid_argument("--insecure needs --name SITE");
    std::fprintf(stderr, "WARNING: --insecure: no TLS. Loopback experiments only.\n");
    o.insecure_site_name = f.name;
  } else {
    const TlsFiles files = LoadTls(file.tls);
    o.tls = ClientTls{files.certificate_pem, files.private_key_pem, files.ca_certificate_pem,
                      file.tls.target_name};
  }
  const std::string folder = f.data.empty() ? file.folder : f.data;
  const int64_t phantoms = f.phantom > 0 ? f.phantom : file.phantoms;
  const std::string masks = f.masks_dir.empty() ? file.masks : f.masks_dir;
  const int64_t seed = f.seed >= 0 ? f.seed : file.seed;
  if (folder.empty() == (phantoms == 0))
    throw std::invalid_argument("give the site's data: --data DIR or --phantom N (not both)");
  o.load_data = [folder, phantoms, masks, seed](const DataRequest& r) {
    if (phantoms > 0) return PhantomLoader(seed, phantoms)(r);
    FolderDatasetOptions d;
    d.root = folder;
    d.masks_dir = masks;
    d.height = r.height;
    d.width = r.width;
    d.channels = r.channels;
    d.num_classes = r.num_classes;
    return LoadFolderDataset(d);
  };
  if (f.threads > 0) torch::set_num_threads(f.threads);
  SiteClient client(o);
  SignalWatch watch([&](int signal) {
    LOG(INFO) << "event=signal signal=" << signal << " action=stop";
    client.Stop();
  });
  const absl::StatusOr<SiteRunSummary> summary = client.Run();
  if (absl::IsCancelled(summary.status())) {
    std::printf("client: stopped\n");
    return;
  }
  const SiteRunSummary s = Unwrap(summary);
  std::printf("client: run finished after %ld rounds; last loss %.4f, validation Dice %.4f\n",
              static_cast<long>(s.rounds_completed), s.last_train_loss, s.last_validation_dice);
}

// ---- status --------------------------------------------------------------------------------

struct StatusFlags {
  std::string config, coordinator;
  bool json = false;
};

void RunStatus(const StatusFlags& f) {
  // admin.toml: coordinator and [tls] (with target_name).
  const config::TomlDocument doc = Unwrap(config::TomlDocument::ReadFile(f.config));
  TomlTable top = doc.Root();
  std::string address = "127.0.0.1:50051";
  Check(top.String("coordinator", &address));
  const TlsPaths paths = ReadTlsTable(top, /*coordinator=*/false);
  Check(top.RejectUnknown());
  if (!f.coordinator.empty()) address = f.coordinator;
  const TlsFiles files = LoadTls(paths);
  grpc::SslCredentialsOptions ssl{files.ca_certificate_pem, files.private_key_pem,
                                  files.certificate_pem};
  grpc::ChannelArguments args;
  if (!paths.target_name.empty()) args.SetSslTargetNameOverride(paths.target_name);
  auto stub = v1::Admin::NewStub(
      grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::StatusReply reply;
  const grpc::Status s = stub->Status(&context, v1::StatusRequest(), &reply);
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE)
    throw std::runtime_error(absl::StrCat(
        "no coordinator answers at ", address, " (", s.error_message(),
        "). Is it running? A finished run's rounds and metrics stay in its coordinator.db"));
  if (!s.ok())
    throw std::runtime_error(absl::StrCat("status from ", address, ": ", s.error_message()));
  if (f.json) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& r : reply.runs()) {
      nlohmann::json sites = nlohmann::json::array();
      for (const auto& site : r.sites()) {
        nlohmann::json j = {{"name", site.name()},         {"connected", site.connected()},
                            {"last_seen", site.last_seen()}, {"images", site.images()}};
        if (site.has_metrics()) {
          j["last_loss"] = site.last_loss();
          j["validation_dice"] = site.validation_dice();
          j["aggregation_weight"] = site.aggregation_weight();
          j["reliability"] = site.reliability();
        }
        sites.push_back(j);
      }
      nlohmann::json rounds = nlohmann::json::array();
      for (const auto& round : r.rounds())
        rounds.push_back(
            {{"round", round.round()}, {"state", round.state()}, {"attempt", round.attempt()}});
      runs.push_back({{"id", r.id()},
                      {"name", r.name()},
                      {"status", r.status()},
                      {"resumed", r.resumed()},
                      {"current_round", r.current_round()},
                      {"total_rounds", r.total_rounds()},
                      {"completed_rounds", r.completed_rounds()},
                      {"rounds", rounds},
                      {"sites", sites}});
    }
    std::printf("%s\n", nlohmann::json{{"runs", runs}}.dump(2).c_str());
    return;
  }
  for (const auto& r : reply.runs()) {
    std::printf("run %ld  %-12s %-9s round %ld/%ld (%ld completed)%s\n",
                static_cast<long>(r.id()), r.name().c_str(), r.status().c_str(),
                static_cast<long>(r.current_round()), static_cast<long>(r.total_rounds()),
                static_cast<long>(r.completed_rounds()),
                r.resumed() > 0 ? absl::StrCat("  resumed ", r.resumed(), "x").c_str() : "");
    std::printf("  %-16s %-9s %-26s %7s %9s %8s %6s %8s\n", "site", "connected", "last seen",
                "images", "last loss", "val Dice", "q_k", "weight");
    for (const auto& site : r.sites()) {
      if (site.has_metrics())
        std::printf("  %-16s %-9s %-26s %7ld %9.4f %8.4f %6.3f %8.4f\n", site.name().c_str(),
                    site.connected() ? "yes" : "no", site.last_seen().c_str(),
                    static_cast<long>(site.images()), site.last_loss(), site.validation_dice(),
                    site.reliability(), site.aggregation_weight());
      else
        std::printf("  %-16s %-9s %-26s %7ld %9s %8s %6s %8s\n", site.name().c_str(),
                    site.connected() ? "yes" : "no", site.last_seen().c_str(),
                    static_cast<long>(site.images()), "-", "-", "-", "-");
    }
  }
}

}  // namespace

void AddFederationCommands(CLI::App& app) {
  auto cf = std::make_shared<CoordinatorFlags>();
  CLI::App* c = app.add_subcommand("coordinator", "Serve a training run to the enrolled sites");
  c->add_option("--config", cf->config, "coordinator.toml (from `splitfed provision`)")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--listen", cf->listen, "Address to serve on, e.g. 0.0.0.0:50051");
  c->add_option("--rounds", cf->rounds, "Training rounds")->check(CLI::Range(1, 100000));
  c->add_option("--min-sites", cf->min_sites, "Sites needed to start and to complete a round")
      ->check(CLI::Range(1, 100000));
  c->add_option("--local-epochs", cf->local_epochs, "Local epochs per round")
      ->check(CLI::Range(1, 1000));
  c->add_option("--batch-size", cf->batch_size, "Images per step")->check(CLI::Range(2, 4096));
  c->add_option("--lr", cf->learning_rate, "Adam learning rate")->check(CLI::PositiveNumber);
  c->add_option("--deadline", cf->deadline, "Round deadline in seconds")
      ->check(CLI::PositiveNumber);
  c->add_option("--image-size", cf->image_size, "Training image size")
      ->check(CLI::Range(16, 4096));
  c->add_option("--split", cf->split, "Cut: deep, shallow, or FRONT_UNITS,BACK_UNITS");
  c->add_option("--activation-encoding", cf->encoding, "fp32 or fp16 for a1/a2/g1/g2");
  c->add_option("--mode", cf->mode,
                "sflv1 (a body copy per site, averaged) or sflv2 (one body, sites in turn)");
  c->add_option("--method", cf->method,
                "splitfed (plain), splitfed-cl, fednoro or feda3i (overrides run.method)");
  c->add_option("--sites", cf->sites, "Enrolled sites (overrides the TOML), comma-separated");
  c->add_option("--seed", cf->seed, "Seed for the initial model and batch order");
  c->add_option("--db", cf->db, "Run store (SQLite) path");
  c->add_option("--checkpoints", cf->checkpoints, "Folder for per-round and final models");
  c->add_option("--threads", cf->threads, "Torch threads (0: default)");
  c->add_flag("--insecure", cf->insecure, "No TLS (loopback experiments only; warns)");
  c->add_option("--monitor", cf->monitor,
                 "Serve /metrics and the dashboard on IP:PORT, e.g. 127.0.0.1:9464 "
                 "(overrides [monitor] listen; off unless set)");
  c->add_flag("--new-run", cf->new_run,
              "Start a new run even if the store holds an unfinished one of this name "
              "(default: resume it from its last completed round)");
  c->callback([cf] { RunCoordinator(*cf); });

  auto kf = std::make_shared<ClientFlags>();
  CLI::App* k = app.add_subcommand("client", "Run a site: train with the coordinator");
  k->add_option("--config", kf->config, "site.toml (from `splitfed provision`)")
      ->required()
      ->check(CLI::ExistingFile);
  k->add_option("--data", kf->data, "Dataset folder with images/ and masks/");
  k->add_option("--masks", kf->masks_dir, "Mask folder inside --data (default masks)");
  k->add_option("--phantom", kf->phantom, "Use N generated phantom images instead (demos)")
      ->check(CLI::Range(2, 1000000));
  k->add_option("--seed", kf->seed, "Phantom seed");
  k->add_option("--coordinator", kf->coordinator, "Coordinator address host:port");
  k->add_option("--threads", kf->threads, "Torch threads (0: default)");
  k->add_flag("--insecure", kf->insecure, "No TLS (loopback experiments only; needs --name)");
  k->add_option("--name", kf->name, "Site name in --insecure mode");
  k->callback([kf] { RunClient(*kf); });

  auto sf = std::make_shared<StatusFlags>();
  CLI::App* s = app.add_subcommand("status", "Show runs, rounds and sites of a coordinator");
  s->add_option("--config", sf->config, "admin.toml (from `splitfed provision`)")
      ->required()
      ->check(CLI::ExistingFile);
  s->add_option("--coordinator", sf->coordinator, "Coordinator address host:port");
  s->add_flag("--json", sf->json, "Print JSON for scripts");
  s->callback([sf] { RunStatus(*sf); });
}

}  // namespace splitfed::cli
