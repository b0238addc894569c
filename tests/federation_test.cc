// The federation end to end: a real coordinator and real sites over gRPC with mutual TLS on
// 127.0.0.1 (port 0), in one process, one thread per site. Every wait is bounded.
#include <grpcpp/grpcpp.h>
#include <sqlite3.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "client/site_client.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "datasets/phantom.h"
#include "provision/certificates.h"
#include "proto/state_codec.h"
#include "provision/federation_kit.h"
#include "split/evaluate.h"
#include "split/model_file.h"
#include "split/trainer.h"
#include "splitfed/v1/federation.grpc.pb.h"

#include "tests/refusal.h"
#include "tests/test_files.h"

namespace splitfed {
namespace {

using test_refusal::Refused;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_files::ReadText;

// Small enough to train in seconds: 32×32, depth 3, f = 8.
RunOptions SmallRun(std::vector<std::string> sites, int64_t rounds) {
  RunOptions o;
  o.run_name = "test";
  o.rounds = rounds;
  o.min_sites = static_cast<int64_t>(sites.size());
  o.enrolled_sites = std::move(sites);
  o.local_epochs = 1;
  o.batch_size = 8;
  o.learning_rate = 3e-3;
  o.round_deadline_seconds = 60;
  o.model.base_width = 8;
  o.model.depth = 3;
  o.image_size = 32;
  o.seed = 5;
  return o;
}

// A site asking for its round the way the server's long-poll does: PollRound, and again
// after every change of the coordinator's state, for up to 20 s.
absl::StatusOr<RoundTicket> WaitForTicket(Coordinator& c, const std::string& site) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (true) {
    const uint64_t seen = c.ChangeCount();
    absl::StatusOr<std::optional<RoundTicket>> polled = c.PollRound(site);
    if (!polled.ok()) return polled.status();
    if (polled->has_value()) return std::move(**polled);
    if (std::chrono::steady_clock::now() >= until) {
      c.StopWaiting(site);
      return absl::DeadlineExceededError("no round opened for " + site);
    }
    c.WaitForChange(seen, until);
  }
}

class Federation : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    dir_ = fs::temp_directory_path() /
           ("splitfed_fed_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    KitOptions kit;
    kit.out_dir = (dir_ / "kit").string();
    kit.sites = {"a", "b", "c", "d"};
    ASSERT_TRUE(ProvisionFederation(kit).ok());
  }
  void TearDown() override {
    if (coordinator_) coordinator_->Stop();
    if (run_.valid()) run_.wait_for(30s);
    server_.reset();
    coordinator_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  void StartCoordinator(RunOptions options) {
    store_ = *RunStore::Open((dir_ / "run.db").string());
    options.checkpoint_dir = (dir_ / "checkpoints").string();
    auto c = Coordinator::Create(options, store_.get());
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    const fs::path k = dir_ / "kit/coordinator";
    auto tls = ReadTlsFiles((k / "coordinator.crt").string(), (k / "coordinator.key").string(),
                            (k / "ca.crt").string());
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls->revocation_list_path = (k / "revoked.crl").string();
    auto server = CoordinatorServer::Start(coordinator_.get(), store_.get(), "127.0.0.1:0", *tls);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    run_ = std::async(std::launch::async, [this] { return coordinator_->Run(); });
  }

  // A coordinator reachable only through the in-process channel (no socket, insecure names).
  void StartInProcessCoordinator(const RunOptions& options) {
    store_ = *RunStore::Open((dir_ / "run.db").string());
    auto c = Coordinator::Create(options, store_.get());
    ASSERT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    auto server = CoordinatorServer::Start(coordinator_.get(), store_.get(), "", std::nullopt);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  SiteClientOptions SiteOptions(const std::string& site, DataLoader loader) {
    const fs::path k = dir_ / "kit/sites" / site;
    SiteClientOptions o;
    o.coordinator = "127.0.0.1:" + std::to_string(server_->port());
    o.tls = ClientTls{ReadText(k / "site.crt"), ReadText(k / "site.key"), ReadText(k / "ca.crt"), ""};
    o.load_data = std::move(loader);
    o.initial_backoff_seconds = 0.05;
    o.max_reconnects = 3;
    return o;
  }

  // Runs the coordinator to the end; fails the test if it takes longer than `limit`.
  void ExpectRunFinishes(std::chrono::seconds limit) {
    ASSERT_EQ(run_.wait_for(limit), std::future_status::ready) << "the run did not finish";
    const absl::Status s = run_.get();
    EXPECT_TRUE(s.ok()) << s;
  }

  fs::path dir_;
  std::unique_ptr<RunStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::future<absl::Status> run_;
};

TEST_F(Federation, ThreeSitesLearnOverMutualTlsAndTheStoreKeepsTheRecord) {
  RunOptions options = SmallRun({"a", "b", "c"}, 6);
  options.local_epochs = 4;
  StartCoordinator(options);
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> sites;
  for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{
           {"a", 11}, {"b", 12}, {"c", 13}})
    sites.push_back(std::async(std::launch::async, [this, name = name, seed = seed] {
      SiteClient client(SiteOptions(name, PhantomLoader(seed, 60)));
      return client.Run();
    }));
  ExpectRunFinishes(240s);
  for (auto& f : sites) {
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    auto summary = f.get();
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->rounds_completed, 6);
  }

  // The final model segments unseen phantoms: foreground Dice above 0.5 (an untrained U-Net
  // scores below 0.2 on these).
  auto file = LoadModelFile((dir_ / "checkpoints/final.pt").string());
  ASSERT_TRUE(file.ok()) << file.status();
  PhantomOptions test;
  test.count = 24;
  test.height = test.width = 32;
  test.seed = 99;
  const double dice = EvaluateSplitModel(file->model, *GeneratePhantoms(test)).MeanForeground().dice;
  EXPECT_GT(dice, 0.5);

  const int64_t run = coordinator_->run_id();
  const auto rounds = *store_->Rounds(run);
  ASSERT_EQ(rounds.size(), 6u);
  for (const RoundRecord& r : rounds) {
    EXPECT_EQ(r.state, "completed");
    EXPECT_TRUE(fs::exists(r.checkpoint_path)) << r.checkpoint_path;
  }
  const auto metrics = *store_->Metrics(run);
  ASSERT_EQ(metrics.size(), 18u);  // 6 rounds × 3 sites
  for (const SiteRoundMetrics& m : metrics) {
    EXPECT_TRUE(m.included);
    EXPECT_NEAR(*m.aggregation_weight, 1.0 / 3, 1e-9) << "equal image counts";
    EXPECT_GT(m.bytes_in, 0);
    EXPECT_GT(m.bytes_out, 0);
    ASSERT_TRUE(m.validation_dice.has_value());
  }
  const auto runs = *store_->Runs();
  EXPECT_EQ(runs[0].status, "finished");
  const auto sites_after = *store_->Sites(run);
  ASSERT_EQ(sites_after.size(), 3u);
  for (const SiteRecord& s : sites_after) {
    EXPECT_FALSE(s.connected) << s.name << " left when the run finished";
    EXPECT_EQ(s.images, 48) << "60 phantoms less the 20 % held back for validation";
  }
}

TEST_F(Federation, OneSiteOverGrpcEqualsInProcessSplitTraining) {
  RunOptions options = SmallRun({"a"}, 2);
  options.local_epochs = 2;
  StartCoordinator(options);
  auto site = std::async(std::launch::async, [this] {
    SiteClient client(SiteOptions("a", PhantomLoader(21, 24)));
    return client.Run();
  });
  ExpectRunFinishes(120s);
  ASSERT_TRUE(site.get().ok());
  SplitModel networked = coordinator_->GlobalModel();

  // The same run in one process: same initial weights, same batches, same optimisers.
  torch::manual_seed(options.seed);
  SplitModel local = MakeSplitModel(options.model, options.split);
  PhantomOptions p;
  p.count = 24;
  p.height = p.width = 32;
  p.seed = 21;
  const SegmentationSet all = *GeneratePhantoms(p);
  const SegmentationSet train = all.Subset(torch::arange(0, 24 - 4));  // the site keeps 20 % back
  TrainerOptions t;
  t.learning_rate = options.learning_rate;
  t.batch_size = options.batch_size;
  for (int64_t round = 1; round <= options.rounds; ++round) {
    SiteTrainer trainer(local.front, local.back, t);  // fresh optimisers each round
    LocalBody body(local.body, options.learning_rate);
    const uint64_t seed = options.seed * 1000003ULL + round;
    for (int64_t e = 0; e < options.local_epochs; ++e)
      ASSERT_TRUE(trainer.TrainEpoch(train, seed + e, body).ok());
  }
  int64_t compared = 0;
  for (auto [a, b] : {std::pair{networked.front, local.front}, {networked.body, local.body},
                      {networked.back, local.back}}) {
    const auto expected = b->named_parameters();
    for (const auto& p : a->named_parameters()) {
      const double diff = (p.value() - *expected.find(p.key())).abs().max().item<double>();
      EXPECT_LE(diff, 1e-5) << p.key();
      ++compared;
    }
  }
  EXPECT_GT(compared, 10);
}

// SFLV2 over gRPC's in-process channel: one shared body that the two sites train in turn. The
// result must equal one of the two sequential orders computed in one process (and differ
// from SFLV1's averaged bodies, which the other order check rules out by construction).
TEST_F(Federation, SflV2TrainsOneBodySiteBySiteOverTheInProcessChannel) {
  RunOptions options = SmallRun({"a", "b"}, 1);
  options.mode = SplitMode::kV2;
  ASSERT_NO_FATAL_FAILURE(StartInProcessCoordinator(options));
  EXPECT_EQ(server_->port(), 0) << "no socket in in-process mode";
  run_ = std::async(std::launch::async, [this] { return coordinator_->Run(); });
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> sites;
  for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"a", 31},
                                                                               {"b", 32}})
    sites.push_back(std::async(std::launch::async, [this, name = name, seed = seed] {
      SiteClientOptions o;
      o.channel = server_->InProcessChannel();
      o.insecure_site_name = name;
      o.load_data = PhantomLoader(seed, 20);
      o.max_reconnects = 3;
      o.initial_backoff_seconds = 0.05;
      return SiteClient(o).Run();
    }));
  ExpectRunFinishes(120s);
  ASSERT_EQ(sites.size(), 2u) << "both sites must have run, or the comparison proves nothing";
  for (auto& f : sites) ASSERT_TRUE(f.get().ok());
  SplitModel networked = coordinator_->GlobalModel();

  auto site_train_set = [](uint64_t seed) {
    PhantomOptions p;
    p.count = 20;
    p.height = p.width = 32;
    p.seed = seed;
    return GeneratePhantoms(p)->Subset(torch::arange(0, 16));
  };
  const SegmentationSet train_a = site_train_set(31), train_b = site_train_set(32);
  auto sequential = [&](const SegmentationSet& first, const SegmentationSet& second) {
    torch::manual_seed(options.seed);
    SplitModel global = MakeSplitModel(options.model, options.split);
    LocalBody body(global.body, options.learning_rate);  // shared: one optimiser
    TrainerOptions t;
    t.learning_rate = options.learning_rate;
    t.batch_size = options.batch_size;
    const uint64_t seed = options.seed * 1000003ULL + 1;
    std::vector<NamedTensors> fronts, backs;
    for (const SegmentationSet* set : {&first, &second}) {
      SplitModel parts = MakeSplitModel(options.model, options.split);
      EXPECT_TRUE(LoadState(*parts.front, ExtractState(*global.front)).ok());
      EXPECT_TRUE(LoadState(*parts.back, ExtractState(*global.back)).ok());
      SiteTrainer trainer(parts.front, parts.back, t);
      EXPECT_TRUE(trainer.TrainEpoch(*set, seed, body).ok());
      fronts.push_back(ExtractState(*parts.front));
      backs.push_back(ExtractState(*parts.back));
    }
    auto average = [](const std::vector<NamedTensors>& two) {
      return WeightedAverage({{"x", 1, 1, 0, two[0]}, {"y", 1, 1, 0, two[1]}}, {0.5, 0.5});
    };
    EXPECT_TRUE(LoadState(*global.front, average(fronts)).ok());
    EXPECT_TRUE(LoadState(*global.back, average(backs)).ok());
    return global;
  };
  auto max_difference = [&](SplitModel& expected) {
    double worst = 0;
    for (auto [a, b] : {std::pair{networked.front, expected.front},
                        {networked.body, expected.body}, {networked.back, expected.back}}) {
      const auto e = b->named_parameters();
      for (const auto& p : a->named_parameters())
        worst = std::max(worst, (p.value() - *e.find(p.key())).abs().max().item<double>());
    }
    return worst;
  };
  SplitModel ab = sequential(train_a, train_b), ba = sequential(train_b, train_a);
  const double diff_ab = max_difference(ab), diff_ba = max_difference(ba);
  EXPECT_LE(std::min(diff_ab, diff_ba), 1e-5) << "a then b: " << diff_ab << ", b then a: " << diff_ba;
  EXPECT_GT(std::max(diff_ab, diff_ba), 1e-4) << "the two orders must be distinguishable";
}

// A site waiting for a round that cannot open yet (min_sites = 2, one site) keeps saying it is
// alive: its "last seen" in the store moves on while it waits.
TEST(CoordinatorRounds, AParticipantWhoseTicketWasLostGetsTheSameRoundAgain) {
  RunOptions o = SmallRun({"a"}, 1);
  auto c = Coordinator::Create(o, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Join("a", 10).ok());
  auto run = std::async(std::launch::async, [&] { return (*c)->Run(); });
  absl::StatusOr<RoundTicket> first = WaitForTicket(**c, "a");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->round, 1);
  // The answer never reached the site, which asks again: same round, same global state.
  absl::StatusOr<RoundTicket> again = WaitForTicket(**c, "a");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->round, 1);
  EXPECT_EQ(again->client_state.size(), first->client_state.size());
  (*c)->Stop();
  ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
}

TEST(CoordinatorRounds, ARefusedUpdateLeavesTheSiteOutWithoutWaitingForTheDeadline) {
  RunOptions o = SmallRun({"a", "b"}, 1);
  o.min_sites = 1;
  o.round_deadline_seconds = 600;
  auto c = Coordinator::Create(o, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Join("a", 10).ok());
  ASSERT_TRUE((*c)->Join("b", 10).ok());
  auto run = std::async(std::launch::async, [&] { return (*c)->Run(); });
  auto ticket_a = std::async(std::launch::async, [&] { return WaitForTicket(**c, "a"); });
  absl::StatusOr<RoundTicket> b = WaitForTicket(**c, "b");
  absl::StatusOr<RoundTicket> a = ticket_a.get();
  ASSERT_TRUE(a.ok() && b.ok());
  SiteSubmission bad;
  bad.round = 1;
  bad.num_images = 10;
  bad.client_state = a->client_state;
  bad.client_state.begin()->second = bad.client_state.begin()->second.clone().fill_(NAN);
  EXPECT_TRUE(absl::IsInvalidArgument((*c)->Submit("a", bad)));
  SiteSubmission good = bad;
  good.client_state = b->client_state;
  // The refusal codes a site retries on: ABORTED (this round is over for it: wait for the
  // next) and NOT_FOUND (join again).
  const absl::Status left_out = (*c)->Submit("a", good);
  EXPECT_TRUE(absl::IsAborted(left_out)) << left_out;
  EXPECT_NE(left_out.message().find("was left out of round 1"), std::string::npos) << left_out;
  EXPECT_TRUE(absl::IsNotFound((*c)->PollRound("nobody").status()));
  ASSERT_TRUE((*c)->Submit("b", good).ok());
  const absl::Status twice = (*c)->Submit("b", good);
  EXPECT_TRUE(absl::IsAborted(twice)) << twice;
  // The round closes with b alone, long before the 10-minute deadline.
  ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(run.get().ok());
}

// With several torch threads per operation, every tensor step of an open round runs on the
// thread in Run() (one OpenMP team in the process); with one, on the caller's thread.
TEST(CoordinatorRounds, TensorWorkRunsOnTheRunThreadWhenOperationsAreMultiThreaded) {
  const int threads_before = torch::get_num_threads();
  for (int threads : {2, 1}) {
    SCOPED_TRACE(threads);
    torch::set_num_threads(threads);
    RunOptions o = SmallRun({"a"}, 1);
    auto c = Coordinator::Create(o, nullptr);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Join("a", 10).ok());
    std::promise<std::thread::id> run_thread;
    auto run = std::async(std::launch::async, [&] {
      run_thread.set_value(std::this_thread::get_id());
      return (*c)->Run();
    });
    const std::thread::id run_id = run_thread.get_future().get();
    absl::StatusOr<RoundTicket> ticket = WaitForTicket(**c, "a");
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    std::thread::id worked_on;
    ASSERT_TRUE((*c)->RunTensorWork(1, [&] { worked_on = std::this_thread::get_id(); }).ok());
    EXPECT_EQ(worked_on, threads > 1 ? run_id : std::this_thread::get_id());
    // A body step takes the same road and answers.
    std::vector<int64_t> shape = {2};
    for (int64_t d : (*c)->cut_shapes().a1) shape.push_back(d);
    absl::StatusOr<torch::Tensor> a2 = (*c)->Forward("a", 1, torch::randn(shape));
    ASSERT_TRUE(a2.ok()) << a2.status();
    EXPECT_EQ(a2->size(0), 2);
    EXPECT_TRUE(absl::IsAborted((*c)->RunTensorWork(2, [] {})));  // not open
    (*c)->Stop();
    ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
    EXPECT_TRUE(run.get().ok());
    bool ran = false;
    EXPECT_TRUE(absl::IsAborted((*c)->RunTensorWork(1, [&] { ran = true; })));
    EXPECT_FALSE(ran);  // refused once the round closed: not run, not left waiting
  }
  torch::set_num_threads(threads_before);
}

// Records every message a site sends, serialized as it goes on the wire, with its method.
class SendRecorder : public grpc::experimental::Interceptor {
 public:
  using Log = std::vector<std::pair<std::string, std::string>>;
  SendRecorder(std::string method, Log* log, std::mutex* mutex)
      : method_(std::move(method)), log_(log), mutex_(mutex) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      grpc::ByteBuffer* buffer = methods->GetSerializedSendMessage();
      std::vector<grpc::Slice> slices;
      std::string bytes;
      if (buffer && buffer->Dump(&slices).ok())
        for (const grpc::Slice& slice : slices)
          bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      std::lock_guard<std::mutex> lock(*mutex_);
      log_->emplace_back(method_, std::move(bytes));
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  Log* log_;
  std::mutex* mutex_;
};

class SendRecorderFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  SendRecorderFactory(SendRecorder::Log* log, std::mutex* mutex) : log_(log), mutex_(mutex) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new SendRecorder(info->method(), log_, mutex_);
  }

 private:
  SendRecorder::Log* log_;
  std::mutex* mutex_;
};

TEST_F(Federation, NoMessageASiteSendsCarriesAnImageAMaskOrATeacherOutput) {
  // SplitFed-CL with a one-round warm-up, so that later rounds refine masks and use the
  // teacher; FedNoRo-style teacher losses and FedA3I's statistic are plain scalars.
  RunOptions options = SmallRun({"a", "b"}, 3);
  options.method.kind = MethodKind::kColearning;
  options.method.warmup_rounds = 1;
  options.method.threshold.fixed_tau = true;  // a young teacher: most masks look unreliable
  ASSERT_NO_FATAL_FAILURE(StartInProcessCoordinator(options));
  run_ = std::async(std::launch::async, [this] { return coordinator_->Run(); });
  SendRecorder::Log sent;
  std::mutex sent_mutex;
  std::vector<std::future<absl::StatusOr<SiteRunSummary>>> sites;
  int64_t refining_rounds = 0;
  std::mutex refining_mutex;
  for (const auto& [name, seed] : std::vector<std::pair<std::string, uint64_t>>{{"a", 41},
                                                                               {"b", 42}})
    sites.push_back(std::async(std::launch::async, [&, name = name, seed = seed] {
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> rec;
      rec.push_back(std::make_unique<SendRecorderFactory>(&sent, &sent_mutex));
      SiteClientOptions o;
      o.channel = server_->InProcessChannel(std::move(rec));
      o.insecure_site_name = name;
      o.load_data = PhantomLoader(seed, 20);
      o.max_reconnects = 3;
      o.initial_backoff_seconds = 0.05;
      o.on_reliability = [&](int64_t, const std::vector<double>&, const std::vector<bool>& ok) {
        std::lock_guard<std::mutex> lock(refining_mutex);
        refining_rounds += std::count(ok.begin(), ok.end(), false) > 0;
      };
      return SiteClient(o).Run();
    }));
  ExpectRunFinishes(180s);
  for (auto& f : sites) ASSERT_TRUE(f.get().ok());
  EXPECT_GT(refining_rounds, 0) << "no round refined a mask: the test would prove little";

  // What a site holds: its images, masks and (at this size) the teacher's and refined
  // per-class maps. None may leave; only a1 and g2 of the cut's shapes, the client parts'
  // weights by name, and scalars may.
  const ActivationShapes cut = coordinator_->cut_shapes();
  const NamedTensors allowed = [&] {
    SplitModel m = MakeSplitModel(options.model, options.split);
    NamedTensors out;
    for (auto& [k, t] : ExtractState(*m.front)) out["front." + k] = t;
    for (auto& [k, t] : ExtractState(*m.back)) out["back." + k] = t;
    out["loss.log_variances"] = torch::zeros({3});
    return out;
  }();
  std::vector<std::string> image_rows;
  for (uint64_t seed : {41, 42}) {
    SegmentationSet set = *PhantomLoader(seed, 20)({32, 32, 1, 4});
    for (int64_t i = 0; i < set.size(); ++i) {
      const torch::Tensor row = set.images[i][0][16].contiguous();
      image_rows.emplace_back(static_cast<const char*>(row.data_ptr()), row.nbytes());
      // A mask row all of one class is a run of zero bytes, which ReLU activations have too.
      const torch::Tensor mask_row = set.masks[i][16].contiguous();
      if (std::get<0>(at::_unique(mask_row)).numel() > 1)
        image_rows.emplace_back(static_cast<const char*>(mask_row.data_ptr()), mask_row.nbytes());
    }
  }
  auto per_image = [](const v1::Tensor& t) {
    return std::vector<int64_t>(t.shape().begin() + (t.shape_size() ? 1 : 0), t.shape().end());
  };
  int64_t split_messages = 0, state_entries = 0;
  ASSERT_FALSE(sent.empty());
  for (const auto& [method, bytes] : sent) {
    for (const std::string& row : image_rows)
      ASSERT_EQ(bytes.find(row), std::string::npos) << method << " carries image or mask bytes";
    if (method == "/splitfed.v1.Split/Train") {
      v1::SplitMessage m;
      ASSERT_TRUE(m.ParseFromString(bytes));
      const auto expected = m.kind() == v1::SplitMessage::GRADIENT ? cut.a2 : cut.a1;
      EXPECT_EQ(per_image(m.tensor()), expected) << "split message kind " << m.kind();
      ++split_messages;
    } else if (method == "/splitfed.v1.Federation/SubmitUpdate") {
      v1::UpdateChunk chunk;
      ASSERT_TRUE(chunk.ParseFromString(bytes));
      if (!chunk.has_state()) {
        EXPECT_TRUE(chunk.has_scalars());
        continue;
      }
      auto it = allowed.find(chunk.state().name());
      ASSERT_NE(it, allowed.end()) << "an update sent '" << chunk.state().name() << "'";
      std::vector<int64_t> shape(chunk.state().tensor().shape().begin(),
                                 chunk.state().tensor().shape().end());
      EXPECT_EQ(shape, it->second.sizes().vec()) << chunk.state().name();
      ++state_entries;
    } else {
      EXPECT_TRUE(method == "/splitfed.v1.Federation/Join" ||
                  method == "/splitfed.v1.Federation/WaitRound" ||
                  method == "/splitfed.v1.Federation/Heartbeat")
          << "unexpected call " << method;
    }
  }
  EXPECT_GT(split_messages, 0);
  EXPECT_GT(state_entries, 0);
}

TEST_F(Federation, AWaitingSiteSendsHeartbeats) {
  // min_sites = 2 and one site: the round never opens, so only heartbeats keep it "seen".
  ASSERT_NO_FATAL_FAILURE(StartInProcessCoordinator(SmallRun({"a", "b"}, 1)));
  run_ = std::async(std::launch::async, [this] { return coordinator_->Run(); });
  SendRecorder::Log sent;
  std::mutex sent_mutex;
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> rec;
  rec.push_back(std::make_unique<SendRecorderFactory>(&sent, &sent_mutex));
  SiteClientOptions o;
  o.channel = server_->InProcessChannel(std::move(rec));
  o.insecure_site_name = "a";
  o.load_data = PhantomLoader(41, 12);
  o.heartbeat_seconds = 0.2;
  SiteClient client(o);
  auto site = std::async(std::launch::async, [&] { return client.Run(); });
  auto heartbeats = [&] {
    std::lock_guard<std::mutex> lock(sent_mutex);
    return std::count_if(sent.begin(), sent.end(), [](const auto& m) {
      return m.first == "/splitfed.v1.Federation/Heartbeat";
    });
  };
  auto last_seen = [&]() -> std::string {
    auto sites = store_->Sites(coordinator_->run_id());
    if (!sites.ok() || sites->empty()) return "";
    return sites->front().last_seen;
  };
  std::string first;
  for (int i = 0; i < 100 && first.empty(); ++i) {
    std::this_thread::sleep_for(50ms);
    first = last_seen();
  }
  ASSERT_FALSE(first.empty()) << "site a never joined";
  const auto before = heartbeats();
  std::this_thread::sleep_for(1s);
  // Every 0.2 s for 1 s: 5 expected; 3 leaves room for a slow machine, 0 would be a failure.
  EXPECT_GE(heartbeats() - before, 3) << "Heartbeat RPCs sent in 1 s";
  EXPECT_GT(last_seen(), first);
  client.Stop();
  ASSERT_EQ(site.wait_for(10s), std::future_status::ready);
  coordinator_->Stop();
}

}  // namespace
}  // namespace splitfed

namespace splitfed {
namespace {

using test_refusal::Refused;

// A site driven message by message, to break the protocol on purpose.
class RawSite {
 public:
  RawSite(const std::string& address, const fs::path& kit)
      : RawSite(address, grpc::SslCredentialsOptions{ReadText(kit / "ca.crt"),
                                                     ReadText(kit / "site.key"),
                                                     ReadText(kit / "site.crt")}) {}
  // Over mutual TLS with whatever the test hands it (a certificate it forged, or none).
  RawSite(const std::string& address, const grpc::SslCredentialsOptions& ssl) {
    auto channel = grpc::CreateChannel(address, grpc::SslCredentials(ssl));
    federation_ = v1::Federation::NewStub(channel);
    split_ = v1::Split::NewStub(channel);
  }
  // Over the coordinator's in-process channel, insecure: the name travels in a header.
  RawSite(const std::shared_ptr<grpc::Channel>& channel, std::string insecure_name)
      : insecure_name_(std::move(insecure_name)),
        federation_(v1::Federation::NewStub(channel)),
        split_(v1::Split::NewStub(channel)) {}
  grpc::Status Join() {
    grpc::ClientContext context;
    Identify(context);
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::JoinRequest request;
    request.set_num_images(10);
    v1::JoinReply reply;
    return federation_->Join(&context, request, &reply);
  }
  // Blocks until a round opens or the call ends; returns the round (0 on failure) and, if
  // asked, the call's status.
  int64_t WaitRound(std::chrono::seconds deadline = 60s, grpc::Status* status = nullptr) {
    grpc::ClientContext context;
    Identify(context);
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    auto reader = federation_->WaitRound(&context, v1::WaitRoundRequest());
    v1::RoundChunk chunk;
    int64_t round = 0;
    while (reader->Read(&chunk))
      if (chunk.has_settings()) round = chunk.settings().round();
    const grpc::Status st = reader->Finish();
    if (status) *status = st;
    return st.ok() ? round : 0;
  }
  // Sends one message on a fresh Split stream; returns the stream's final status.
  grpc::Status SendOne(const v1::SplitMessage& message) {
    grpc::ClientContext context;
    Identify(context);
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto stream = split_->Train(&context);
    stream->Write(message);
    stream->WritesDone();
    v1::SplitMessage reply;
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }
  // Sends `message` up to `times` times on one Split stream, reading each answer; returns the
  // stream's final status and, in `answered`, how many were answered.
  grpc::Status Flood(const v1::SplitMessage& message, int times, int* answered) {
    grpc::ClientContext context;
    Identify(context);
    context.set_deadline(std::chrono::system_clock::now() + 30s);
    auto stream = split_->Train(&context);
    v1::SplitMessage reply;
    *answered = 0;
    for (int i = 0; i < times; ++i) {
      if (!stream->Write(message) || !stream->Read(&reply)) break;
      ++*answered;
    }
    stream->WritesDone();
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }
  // Sends one good activation, reads the answer, then drops the connection.
  bool StartThenVanish(const v1::SplitMessage& message) {
    grpc::ClientContext context;
    Identify(context);
    auto stream = split_->Train(&context);
    v1::SplitMessage reply;
    const bool answered = stream->Write(message) && stream->Read(&reply);
    context.TryCancel();
    stream->Finish();
    return answered;
  }
  // NaN weights, or (with a negative validation loss) finite weights and a bad scalar.
  grpc::Status SubmitWithNaN(int64_t round, double validation_loss = 0) {
    grpc::ClientContext context;
    Identify(context);
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::SubmitReply reply;
    auto writer = federation_->SubmitUpdate(&context, &reply);
    v1::UpdateChunk chunk;
    chunk.mutable_scalars()->set_round(round);
    chunk.mutable_scalars()->set_num_images(10);
    chunk.mutable_scalars()->set_validation_loss(validation_loss);
    writer->Write(chunk);
    chunk.Clear();
    torch::Tensor bad = torch::zeros({8});
    if (validation_loss >= 0) bad[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(EncodeStateEntry("front.enc0_conv1.bn.weight", bad, chunk.mutable_state()).ok());
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

 private:
  void Identify(grpc::ClientContext& context) const {
    if (!insecure_name_.empty()) context.AddMetadata("x-splitfed-site", insecure_name_);
  }

  std::string insecure_name_;  // empty over mTLS: the certificate names the site
  std::unique_ptr<v1::Federation::Stub> federation_;
  std::unique_ptr<v1::Split::Stub> split_;
};

// Waiting sites are parked, not served by a thread each: every one is told to ask again when
// its long-poll runs out, and a server shutting down ends the calls still parked.
TEST_F(Federation, ParkedWaitRoundCallsEndOnTheirLongPollOrAtShutdown) {
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) names.push_back("site" + std::to_string(i));
  RunOptions options = SmallRun(names, 1);
  // Run() is never called: no round opens.
  store_ = *RunStore::Open((dir_ / "run.db").string());
  coordinator_ = *Coordinator::Create(options, store_.get());
  server_ = *CoordinatorServer::Start(coordinator_.get(), store_.get(), "", std::nullopt, 0.5);

  const auto start = std::chrono::steady_clock::now();
  std::vector<std::future<grpc::Status>> waits;
  for (const std::string& name : names)
    waits.push_back(std::async(std::launch::async, [&, name] {
      RawSite site(server_->InProcessChannel(), name);
      grpc::Status st = site.Join();
      if (st.ok()) site.WaitRound(20s, &st);
      return st;
    }));
  for (auto& w : waits) {
    ASSERT_EQ(w.wait_for(15s), std::future_status::ready);
    const grpc::Status st = w.get();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
    EXPECT_NE(st.error_message().find("ask again"), std::string::npos) << st.error_message();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 500ms);

  // A long-poll of 30 s, cut short by the server's shutdown.
  server_ = *CoordinatorServer::Start(coordinator_.get(), store_.get(), "", std::nullopt, 30);
  auto parked = std::async(std::launch::async, [&] {
    RawSite site(server_->InProcessChannel(), "site0");
    grpc::Status st = site.Join();
    if (st.ok()) site.WaitRound(60s, &st);
    return st;
  });
  std::this_thread::sleep_for(300ms);
  const auto shutdown = std::chrono::steady_clock::now();
  server_->Shutdown();
  ASSERT_EQ(parked.wait_for(20s), std::future_status::ready);
  const grpc::Status ended = parked.get();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - shutdown, 15s);
}

// Every way a certificate can be wrong, each against a live mTLS handshake, with the exact
// status a site sees. A handshake OpenSSL refuses never reaches the service: the call sees no
// server (UNAVAILABLE, with nothing more said to a stranger). Certificates that pass the
// handshake but name no enrolled site, or are revoked, reach the service and are refused by
// name (PERMISSION_DENIED). The enrolled sites then run to the end.
TEST_F(Federation, EachBadCertificateGetsItsExactStatusAndTheEnrolledSitesStillFinish) {
  RunOptions options = SmallRun({"a", "b", "c"}, 1);
  options.min_sites = 2;  // "c" is revoked below and never trains
  options.round_open_wait_seconds = 0.2;
  StartCoordinator(options);
  const std::string address = "127.0.0.1:" + std::to_string(server_->port());
  const fs::path kit = dir_ / "kit";
  const std::string ca = ReadText(kit / "ca/ca.crt");
  const PemPair ca_pair{ca, ReadText(kit / "ca/ca.key")};
  auto site_pair = [&](const std::string& site) {
    return PemPair{ReadText(kit / "sites" / site / "site.crt"),
                   ReadText(kit / "sites" / site / "site.key")};
  };
  auto issue = [&](const PemPair& by, CertificateRequest request) {
    absl::StatusOr<PemPair> pair = IssueCertificate(by, request);
    EXPECT_TRUE(pair.ok()) << pair.status();
    return pair.ok() ? *pair : PemPair{};
  };
  auto as_site = [](const std::string& name) {
    CertificateRequest r;
    r.common_name = name;
    r.organizational_unit = "site";
    return r;
  };
  // "c" is revoked while the coordinator runs: the list is read again, no restart.
  absl::StatusOr<std::vector<std::string>> revoked = RevokeSite(kit.string(), "c");
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_EQ(revoked->size(), 2u) << "the CA's list and the coordinator kit's copy";

  const PemPair rogue_ca = *MakeCertificateAuthority("rogue", 10);
  CertificateRequest expired = as_site("b");
  expired.not_before_offset_days = -30;
  expired.valid_days = 10;
  CertificateRequest not_yet_valid = as_site("b");
  not_yet_valid.not_before_offset_days = 5;
  CertificateRequest server_only = as_site("b");
  server_only.role = CertificateRole::kServer;  // serverAuth, no clientAuth
  const PemPair self_signed = *MakeCertificateAuthority("a", 10);

  struct Case {
    std::string name;
    std::optional<PemPair> credentials;  // none: no client certificate at all
    grpc::StatusCode expected;
    std::string says;  // in the error message, when the service itself refuses
  };
  const std::vector<Case> cases = {
      {"valid certificate of an enrolled site (control)", site_pair("a"), grpc::StatusCode::OK,
       ""},
      {"no certificate", std::nullopt, grpc::StatusCode::UNAVAILABLE, ""},
      {"self-signed, enrolled name", self_signed, grpc::StatusCode::UNAVAILABLE, ""},
      {"another CA, enrolled name", issue(rogue_ca, as_site("a")), grpc::StatusCode::UNAVAILABLE,
       ""},
      {"expired", issue(ca_pair, expired), grpc::StatusCode::UNAVAILABLE, ""},
      {"not yet valid", issue(ca_pair, not_yet_valid), grpc::StatusCode::UNAVAILABLE, ""},
      {"wrong key for the certificate",
       PemPair{site_pair("a").certificate, site_pair("b").private_key},
       grpc::StatusCode::UNAVAILABLE, ""},
      {"the CA's own certificate as a leaf", ca_pair, grpc::StatusCode::UNAVAILABLE, ""},
      {"no clientAuth usage", issue(ca_pair, server_only), grpc::StatusCode::UNAVAILABLE, ""},
      {"valid, name not enrolled", site_pair("d"), grpc::StatusCode::PERMISSION_DENIED,
       "'d' is not enrolled"},
      {"revoked", site_pair("c"), grpc::StatusCode::PERMISSION_DENIED,
       "the certificate of 'c' is revoked"},
  };
  for (const Case& c : cases) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca;
    if (c.credentials) {
      ssl.pem_private_key = c.credentials->private_key;
      ssl.pem_cert_chain = c.credentials->certificate;
    }
    const grpc::Status status = RawSite(address, ssl).Join();
    EXPECT_EQ(status.error_code(), c.expected) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.says), std::string::npos)
        << c.name << ": " << status.error_message();
  }

  auto a = std::async(std::launch::async,
                      [this] { return SiteClient(SiteOptions("a", PhantomLoader(1, 16))).Run(); });
  auto b = std::async(std::launch::async,
                      [this] { return SiteClient(SiteOptions("b", PhantomLoader(2, 16))).Run(); });
  ExpectRunFinishes(120s);
  EXPECT_TRUE(a.get().ok());
  EXPECT_TRUE(b.get().ok());
}

v1::SplitMessage Activation(int64_t round, const torch::Tensor& t) {
  v1::SplitMessage m;
  m.set_kind(v1::SplitMessage::ACTIVATION);
  m.set_round(round);
  m.set_step(1);
  EXPECT_TRUE(EncodeTensor(t, WireEncoding::kFp32, m.mutable_tensor()).ok());
  return m;
}

// Round 1 with a raw site "c" (driven message by message) and two real sites "a" and "b".
class RawSiteFederation : public Federation {
 protected:
  // Starts a run of `rounds` (min_sites 2, all three in round 1) and blocks until round 1 is
  // open for c.
  void StartRoundOneWithRawC(int64_t rounds) {
    RunOptions options = SmallRun({"a", "b", "c"}, rounds);
    options.min_sites = 2;
    options.round_open_wait_seconds = 20;  // all three are in round 1
    StartCoordinator(options);
    c_ = std::make_unique<RawSite>("127.0.0.1:" + std::to_string(server_->port()),
                                   dir_ / "kit/sites/c");
    ASSERT_TRUE(c_->Join().ok());
    auto round = std::async(std::launch::async, [this] { return c_->WaitRound(); });
    a_ = std::async(std::launch::async,
                    [this] { return SiteClient(SiteOptions("a", PhantomLoader(1, 24))).Run(); });
    b_ = std::async(std::launch::async,
                    [this] { return SiteClient(SiteOptions("b", PhantomLoader(2, 24))).Run(); });
    ASSERT_EQ(round.wait_for(60s), std::future_status::ready);
    ASSERT_EQ(round.get(), 1);
  }
  void ExpectRealSitesFinished() {
    EXPECT_TRUE(a_.get().ok());
    EXPECT_TRUE(b_.get().ok());
  }

  std::unique_ptr<RawSite> c_;
  std::future<absl::StatusOr<SiteRunSummary>> a_, b_;
};

TEST_F(RawSiteFederation, ASiteLostMidRoundIsLeftOutAndRejoinsTheNextRound) {
  ASSERT_NO_FATAL_FAILURE(StartRoundOneWithRawC(3));
  // c starts training, then its process "dies".
  EXPECT_TRUE(c_->StartThenVanish(Activation(1, torch::randn({2, 8, 16, 16}))));
  // A restarted c takes part in the rounds that follow.
  auto c_again = std::async(std::launch::async,
                            [this] { return SiteClient(SiteOptions("c", PhantomLoader(3, 24))).Run(); });
  ExpectRunFinishes(180s);
  ExpectRealSitesFinished();
  auto c_summary = c_again.get();
  ASSERT_TRUE(c_summary.ok()) << c_summary.status();
  EXPECT_GE(c_summary->rounds_completed, 2);

  const auto rounds = *store_->Rounds(coordinator_->run_id());
  for (const RoundRecord& r : rounds) EXPECT_EQ(r.state, "completed") << "round " << r.round;
  bool c_left_out_of_round_1 = false, c_in_later_round = false;
  const auto metrics = *store_->Metrics(coordinator_->run_id());
  for (const SiteRoundMetrics& m : metrics) {
    if (m.site != "c") continue;
    if (m.round == 1) {
      c_left_out_of_round_1 = !m.included;
      EXPECT_NE(m.note.find("connection lost"), std::string::npos) << m.note;
    }
    if (m.round > 1 && m.included) c_in_later_round = true;
  }
  EXPECT_TRUE(c_left_out_of_round_1);
  EXPECT_TRUE(c_in_later_round);
}

// Site c declared 10 training images and the run has one local epoch: its sixth batch of two
// is more training than it can have, so the body refuses it, c is left out of the round, and
// the others finish it. A message past the size limit is refused before it is decoded.
TEST_F(RawSiteFederation, AFloodingOrOversizedSiteIsCutOffAndTheOthersFinish) {
  ASSERT_NO_FATAL_FAILURE(StartRoundOneWithRawC(1));
  v1::SplitMessage oversized = Activation(1, torch::randn({2, 8, 16, 16}));
  oversized.mutable_tensor()->mutable_data()->resize(kMaxMessageBytes + 1024);
  const grpc::Status too_big = c_->SendOne(oversized);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << too_big.error_message();
  EXPECT_NE(too_big.error_message().find("Received message larger than max"), std::string::npos)
      << "the coordinator refused it on arrival: " << too_big.error_message();
  oversized.Clear();

  int answered = 0;
  const grpc::Status flood = c_->Flood(Activation(1, torch::randn({2, 8, 16, 16})), 50, &answered);
  EXPECT_EQ(answered, 5) << "10 images in batches of 2";
  EXPECT_EQ(flood.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << flood.error_message();
  EXPECT_NE(flood.error_message().find("asked for 12 training images in round 1"),
            std::string::npos)
      << flood.error_message();

  ExpectRunFinishes(120s);
  ExpectRealSitesFinished();
  const auto rounds = *store_->Rounds(coordinator_->run_id());
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].state, "completed");
  int included = 0;
  const auto metrics = store_->Metrics(coordinator_->run_id());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  for (const SiteRoundMetrics& m : *metrics) {
    if (m.site == "c") {
      EXPECT_FALSE(m.included);
      EXPECT_NE(m.note.find("training images"), std::string::npos) << m.note;
    } else {
      included += m.included;
    }
  }
  EXPECT_EQ(included, 2);
}

TEST_F(RawSiteFederation, MalformedMessagesGetClearErrorsAndTheOthersCarryOn) {
  ASSERT_NO_FATAL_FAILURE(StartRoundOneWithRawC(1));
  RawSite& c = *c_;

  auto expect_error = [&](const v1::SplitMessage& m, grpc::StatusCode code,
                          const std::string& needle) {
    const grpc::Status s = c.SendOne(m);
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_NE(s.error_message().find(needle), std::string::npos) << s.error_message();
  };
  // Wrong shape (checked against the run's cut: a1 is [N, 8, 16, 16]).
  expect_error(Activation(1, torch::randn({2, 8, 16, 15})), grpc::StatusCode::INVALID_ARGUMENT,
               "a1 has shape [2, 8, 16, 15], expected [N, 8, 16, 16]");
  // Wrong dtype.
  expect_error(Activation(1, torch::zeros({2, 8, 16, 16}, torch::kLong)),
               grpc::StatusCode::INVALID_ARGUMENT, "dtype DTYPE_INT64, expected DTYPE_FLOAT32");
  // Truncated bytes.
  v1::SplitMessage truncated = Activation(1, torch::randn({2, 8, 16, 16}));
  truncated.mutable_tensor()->mutable_data()->resize(100);
  expect_error(truncated, grpc::StatusCode::INVALID_ARGUMENT, "100 data bytes");
  // NaN activations.
  torch::Tensor nan = torch::randn({2, 8, 16, 16});
  nan[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  expect_error(Activation(1, nan), grpc::StatusCode::INVALID_ARGUMENT, "NaN");
  // A sparse activation whose mask is a byte short.
  v1::SplitMessage short_mask;
  short_mask.set_kind(v1::SplitMessage::ACTIVATION);
  short_mask.set_round(1);
  short_mask.set_step(1);
  Support support;
  ASSERT_TRUE(EncodeRectified(torch::relu(torch::randn({2, 8, 16, 16})), WireEncoding::kFp32,
                              short_mask.mutable_tensor(), &support)
                  .ok());
  ASSERT_EQ(short_mask.tensor().layout(), v1::LAYOUT_NONZERO);
  short_mask.mutable_tensor()->mutable_mask()->pop_back();
  expect_error(short_mask, grpc::StatusCode::INVALID_ARGUMENT,
               "a mask of 511 bytes, but shape [2, 8, 16, 16] needs 512");
  // A gradient on a support, with no sparse activation before it in the step.
  v1::SplitMessage gradient;
  gradient.set_kind(v1::SplitMessage::GRADIENT);
  gradient.set_round(1);
  gradient.set_step(1);
  ASSERT_TRUE(EncodeOnSupport(torch::randn({2, 8, 16, 16}), support, WireEncoding::kFp32,
                              gradient.mutable_tensor())
                  .ok());
  expect_error(gradient, grpc::StatusCode::INVALID_ARGUMENT,
               "no activation crossed with LAYOUT_NONZERO");
  // NaN weights in an update.
  const grpc::Status weights = c.SubmitWithNaN(1);
  EXPECT_EQ(weights.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(weights.error_message().find("holds NaN"), std::string::npos)
      << weights.error_message();
  // A negative validation loss (it would weigh the site in quality-weighted aggregation).
  const grpc::Status scalars = c.SubmitWithNaN(1, -3.0);
  EXPECT_EQ(scalars.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(scalars.error_message().find("the validation loss >= 0"), std::string::npos)
      << scalars.error_message();

  ExpectRunFinishes(120s);
  ExpectRealSitesFinished();
  const auto rounds = *store_->Rounds(coordinator_->run_id());
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].state, "completed");
}

// A scratch folder for one test, removed when it ends.
struct ScratchDir {
  fs::path path = fs::temp_directory_path() /
                  ("splitfed_parts_" + std::to_string(::getpid()) + "_" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  ScratchDir() { fs::remove_all(path); fs::create_directories(path); }
  ~ScratchDir() { fs::remove_all(path); }
};

TEST(Checkpointer, KeepsEveryRoundOrOnlyTheFinalModel) {
  ScratchDir dir;
  const UNetConfig model{1, 2, 4, 2};
  const SplitSpec split = SplitSpec::Deep();
  SplitModel m = MakeSplitModel(model, split);
  for (bool every_round : {true, false}) {
    const fs::path folder = dir.path / (every_round ? "all" : "final");
    absl::StatusOr<Checkpointer> c =
        Checkpointer::Create(folder.string(), every_round, model, split, 32);
    ASSERT_TRUE(c.ok()) << c.status();
    absl::StatusOr<std::string> round = c->SaveRound(3, m);
    ASSERT_TRUE(round.ok()) << round.status();
    absl::StatusOr<std::string> final_model = c->SaveFinal(m);
    ASSERT_TRUE(final_model.ok()) << final_model.status();
    EXPECT_EQ(*final_model, (folder / "final.pt").string());
    if (every_round) {
      EXPECT_EQ(*round, (folder / "round-3.pt").string());
      absl::StatusOr<ModelFile> read = LoadModelFile(*round);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_EQ(read->image_height, 32);
    } else {
      EXPECT_EQ(*round, "") << "only final.pt is kept";
      EXPECT_FALSE(fs::exists(folder / "round-3.pt"));
    }
    EXPECT_TRUE(fs::exists(folder / "final.pt"));
  }
  // No folder: nothing is written, and that is not an error.
  absl::StatusOr<Checkpointer> none = Checkpointer::Create("", true, model, split, 32);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none->SaveFinal(m), "");
}

TEST(Checkpointer, AFolderThatCannotBeMadeIsRefused) {
  ScratchDir dir;
  std::ofstream(dir.path / "a-file") << "x";
  const absl::StatusOr<Checkpointer> c = Checkpointer::Create(
      (dir.path / "a-file" / "checkpoints").string(), true, UNetConfig{}, SplitSpec::Deep(), 64);
  EXPECT_TRUE(absl::IsPermissionDenied(c.status())) << c.status();
  EXPECT_NE(c.status().message().find("cannot create the checkpoint folder"), std::string::npos);
}

TEST(RoundRecorder, HistoryFailuresFailTheRunLivenessFailuresDoNot) {
  ScratchDir dir;
  const std::string db = (dir.path / "run.db").string();
  absl::StatusOr<std::unique_ptr<RunStore>> store = RunStore::Open(db);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<RoundRecorder> recorder = RoundRecorder::Create(store->get(), "r", "{}");
  ASSERT_TRUE(recorder.ok()) << recorder.status();
  recorder->SiteSeen("a", 10, true);
  ASSERT_TRUE(recorder->RoundStarted(1).ok());
  ASSERT_EQ((*store)->Sites(recorder->run_id())->size(), 1u);

  // Break the store from outside, as a full disk or a damaged file would.
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "DROP TABLE sites; DROP TABLE rounds; DROP TABLE runs;", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);

  recorder->SiteSeen("a", 10, false);  // logged; nothing to assert but that it returns
  EXPECT_TRUE(Refused(recorder->RoundStarted(2), absl::StatusCode::kInternal, "starting a round"))
      << "a round the store cannot record fails";
  RoundClosing round2;
  round2.round = 2;
  EXPECT_TRUE(Refused(recorder->RoundClosed(round2, true), absl::StatusCode::kInternal,
                      "finishing a round"));
  EXPECT_TRUE(Refused(recorder->RunFinished(), absl::StatusCode::kInternal, "finishing a run"));
  const absl::Status why = absl::InternalError("the aggregation failed");
  EXPECT_EQ(recorder->RunFailed(why), why) << "the run's own error wins over the store's";

  // Without a store every call does nothing.
  RoundRecorder none;
  none.SiteSeen("a", 1, true);
  EXPECT_TRUE(none.RoundStarted(1).ok());
  EXPECT_TRUE(none.RoundClosed(RoundClosing(), true).ok());
  EXPECT_TRUE(none.RunFinished().ok());
  EXPECT_EQ(none.RunFailed(why), why);
}

// A site's part of a round without training: it sends the global parts back, moved by `shift`
// so that each round leaves a model of its own.
absl::Status SubmitShifted(Coordinator& c, const std::string& site, const RoundTicket& t,
                           double shift) {
  SiteSubmission s;
  s.round = t.round;
  s.num_images = 10;
  for (const auto& [name, tensor] : t.client_state)
    s.client_state[name] = tensor.is_floating_point() ? tensor + shift : tensor.clone();
  return c.Submit(site, std::move(s));
}

// A coordinator stopped after round 1 (status "stopped", as after a kill) is taken up by the
// next one on the same store: same run, the round-1 model and loss weights, round 2 next; an
// update for round 1 is refused as stale; a changed learning rate and a damaged resume file
// are refused with their own errors; --new-run starts afresh.
TEST(CoordinatorResume, TakesUpTheRunFromItsLastCompletedRound) {
  ScratchDir dir;
  RunOptions o = SmallRun({"a"}, 3);
  o.method.kind = MethodKind::kColearning;  // learned loss weights and a teacher to carry over
  o.checkpoint_dir = (dir.path / "checkpoints").string();
  o.resume = true;
  auto store = RunStore::Open((dir.path / "run.db").string());
  ASSERT_TRUE(store.ok()) << store.status();
  NamedTensors after_round_1;
  int64_t run_id = 0;
  {
    auto c = Coordinator::Create(o, store->get());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE((*c)->resumed());
    run_id = (*c)->run_id();
    ASSERT_TRUE((*c)->Join("a", 10).ok());
    auto run = std::async(std::launch::async, [&] { return (*c)->Run(); });
    absl::StatusOr<RoundTicket> t1 = WaitForTicket(**c, "a");
    ASSERT_TRUE(t1.ok()) << t1.status();
    ASSERT_TRUE(SubmitShifted(**c, "a", *t1, 0.25).ok());
    absl::StatusOr<RoundTicket> t2 = WaitForTicket(**c, "a");  // round 2 is open
    ASSERT_TRUE(t2.ok()) << t2.status();
    ASSERT_EQ(t2->round, 2);
    after_round_1 = t2->client_state;
    (*c)->Stop();
    ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
    ASSERT_TRUE(run.get().ok());
  }
  ASSERT_EQ((*(*store)->Runs())[0].status, "stopped");

  RunOptions changed = o;
  changed.learning_rate = 0.5;
  const auto refused = Coordinator::Create(changed, store->get());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("run.learning_rate is 0.5 in this configuration"),
            std::string::npos)
      << refused.status();

  auto c = Coordinator::Create(o, store->get());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->resumed());
  EXPECT_EQ((*c)->resumed_after_round(), 1);
  EXPECT_EQ((*c)->run_id(), run_id);
  // The monitor's plots start with the rounds before the stop, their durations included.
  const MonitorSnapshot before = (*c)->Snapshot();
  ASSERT_EQ(before.history.size(), 1u);
  EXPECT_EQ(before.history[0].round, 1);
  EXPECT_EQ(before.history[0].sites_included, 1);
  EXPECT_GT(before.history[0].duration_seconds, 0) << "from the store's timestamps";
  ASSERT_TRUE((*c)->Join("a", 10).ok());
  auto run = std::async(std::launch::async, [&] { return (*c)->Run(); });
  absl::StatusOr<RoundTicket> t2 = WaitForTicket(**c, "a");
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_EQ(t2->round, 2);
  ASSERT_EQ(t2->client_state.size(), after_round_1.size());
  for (const auto& [name, t] : after_round_1)
    EXPECT_TRUE(torch::equal(t2->client_state.at(name), t)) << name << " differs after resuming";
  EXPECT_TRUE(after_round_1.count(kLossLogVariances));

  RoundTicket stale = *t2;
  stale.round = 1;
  const absl::Status late = SubmitShifted(**c, "a", stale, 0.5);
  EXPECT_TRUE(absl::IsAborted(late)) << late;
  EXPECT_NE(late.message().find("stale update: round 1 is already over"), std::string::npos)
      << late;
  ASSERT_TRUE(SubmitShifted(**c, "a", *t2, 0.25).ok());
  absl::StatusOr<RoundTicket> t3 = WaitForTicket(**c, "a");
  ASSERT_TRUE(t3.ok()) << t3.status();
  ASSERT_TRUE(SubmitShifted(**c, "a", *t3, 0.25).ok());
  ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
  ASSERT_TRUE(run.get().ok());
  c->reset();

  const auto runs = *(*store)->Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, "finished");
  EXPECT_EQ(runs[0].resumed, 1);
  const auto rounds = *(*store)->Rounds(run_id);
  ASSERT_EQ(rounds.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(rounds[k].round, k + 1);
    EXPECT_EQ(rounds[k].state, "completed");
    EXPECT_EQ(rounds[k].attempt, k == 1 ? 2 : 1) << "round " << k + 1;
  }

  // A finished run is not taken up again: a new one starts.
  auto next = Coordinator::Create(o, store->get());
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_FALSE((*next)->resumed());
  EXPECT_NE((*next)->run_id(), run_id);
}

TEST(CoordinatorResume, ADamagedResumeFileIsDataLossNeverARestartFromRoundOne) {
  ScratchDir dir;
  RunOptions o = SmallRun({"a"}, 2);
  o.checkpoint_dir = (dir.path / "checkpoints").string();
  o.resume = true;
  auto store = RunStore::Open((dir.path / "run.db").string());
  ASSERT_TRUE(store.ok()) << store.status();
  {
    auto c = Coordinator::Create(o, store->get());
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Join("a", 10).ok());
    auto run = std::async(std::launch::async, [&] { return (*c)->Run(); });
    absl::StatusOr<RoundTicket> t1 = WaitForTicket(**c, "a");
    ASSERT_TRUE(t1.ok()) << t1.status();
    ASSERT_TRUE(SubmitShifted(**c, "a", *t1, 0.25).ok());
    ASSERT_TRUE(WaitForTicket(**c, "a").ok());
    (*c)->Stop();
    ASSERT_EQ(run.wait_for(30s), std::future_status::ready);
  }
  const fs::path state = fs::path(o.checkpoint_dir) / "resume" / "round-1.state";
  ASSERT_TRUE(fs::exists(state));
  { std::ofstream(state, std::ios::app) << "x"; }
  auto damaged = Coordinator::Create(o, store->get());
  EXPECT_TRUE(absl::IsDataLoss(damaged.status())) << damaged.status();
  EXPECT_NE(damaged.status().message().find("the resume state is corrupt"), std::string::npos);
  fs::remove(state);
  auto missing = Coordinator::Create(o, store->get());
  EXPECT_TRUE(absl::IsDataLoss(missing.status())) << missing.status();
  EXPECT_NE(missing.status().message().find("the resume state is missing"), std::string::npos);
  // --new-run: the broken run stays as it is and a new one starts from round 1.
  o.resume = false;
  auto fresh = Coordinator::Create(o, store->get());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE((*fresh)->resumed());
}

}  // namespace
}  // namespace splitfed
