#include "client/site_client.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "colearning/site_objective.h"
#include "datasets/phantom.h"
#include "proto/grpc_status.h"
#include "proto/method_codec.h"
#include "proto/state_codec.h"
#include "provision/certificates.h"
#include "split/model_state.h"
#include "split/trainer.h"
#include "splitfed/v1/federation.grpc.pb.h"
#include "client/stream_body.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

// Decided by status code alone. UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED: the connection;
// ABORTED: a message for a round that closed (wait for the next); NOT_FOUND: the coordinator
// does not know this site (join again). Anything else, FAILED_PRECONDITION included (the
// site asked for something the run does not allow), would fail the same way again.
bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s) ||
         absl::IsAborted(s) || absl::IsNotFound(s);
}

// The site's registration must be made again before it can take part.
bool MustRejoin(const absl::Status& s) { return absl::IsUnavailable(s) || absl::IsNotFound(s); }

}  // namespace

struct SiteClient::Impl {
  SiteClientOptions options;
  std::atomic<bool> stopping{false};
  std::mutex context_mutex;
  std::condition_variable stopped;  // notified by Stop(), under context_mutex
  grpc::ClientContext* active = nullptr;  // the call to cancel on Stop()

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Federation::Stub> federation;
  std::unique_ptr<v1::Split::Stub> split;

  UNetConfig model;
  SplitSpec cut;
  ActivationShapes shapes;
  SegmentationSet train, validation;
  std::string name;  // for logs
  std::atomic<bool> joined{false};
  NamedTensors teacher_client_state;  // the teacher's front and back (β > 0 averages them)

  // The teacher's front and back for this round: θ_T ← β·θ_T + (1 − β)·θ_G.
  NamedTensors UpdateTeacher(const NamedTensors& global, double beta) {
    if (teacher_client_state.empty() || beta == 0) {
      teacher_client_state = global;
    } else {
      for (auto& [key, t] : teacher_client_state)
        if (t.is_floating_point() && global.count(key)) t = beta * t + (1 - beta) * global.at(key);
    }
    return teacher_client_state;
  }

  // Sends a heartbeat every options.heartbeat_seconds while joined, until `done` is set.
  void HeartbeatLoop(std::mutex* mutex, std::condition_variable* wake, const bool* done) {
    const auto period = std::chrono::milliseconds(
        static_cast<int64_t>(options.heartbeat_seconds * 1000));
    std::unique_lock<std::mutex> lock(*mutex);
    while (!wake->wait_for(lock, period, [&] { return *done; })) {
      if (!joined) continue;
      lock.unlock();
      grpc::ClientContext context;
      Prepare(&context);
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::HeartbeatReply reply;
      grpc::Status s = federation->Heartbeat(&context, v1::HeartbeatRequest(), &reply);
      if (!s.ok())
        LOG(WARNING) << "event=heartbeat_failed site=" << name << " reason=\""
                     << s.error_message() << "\"";
      lock.lock();
    }
  }

  // Waits `seconds` (a reconnect backoff), or less if Stop() is called.
  void SleepUnlessStopped(double seconds) {
    std::unique_lock<std::mutex> lock(context_mutex);
    stopped.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return stopping.load(); });
  }

  // Registers `context` as the one Stop() cancels while it lives.
  class Active {
   public:
    Active(Impl* impl, grpc::ClientContext* c) : impl_(impl) {
      std::lock_guard<std::mutex> lock(impl_->context_mutex);
      impl_->active = c;
      if (impl_->stopping) c->TryCancel();
    }
    ~Active() {
      std::lock_guard<std::mutex> lock(impl_->context_mutex);
      impl_->active = nullptr;
    }

   private:
    Impl* impl_;
  };

  void Prepare(grpc::ClientContext* c) {
    if (!options.tls) c->AddMetadata("x-splitfed-site", options.insecure_site_name);
  }

  void Connect() {
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    if (options.tls) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = options.tls->ca_certificate_pem;
      ssl.pem_private_key = options.tls->private_key_pem;
      ssl.pem_cert_chain = options.tls->certificate_pem;
      credentials = grpc::SslCredentials(ssl);
      if (!options.tls->target_name_override.empty())
        args.SetSslTargetNameOverride(options.tls->target_name_override);
    } else {
      credentials = grpc::InsecureChannelCredentials();
    }
    channel = options.channel ? options.channel
                              : grpc::CreateCustomChannel(options.coordinator, credentials, args);
    federation = v1::Federation::NewStub(channel);
    split = v1::Split::NewStub(channel);
  }

  absl::Status Join() {
    grpc::ClientContext context;
    Prepare(&context);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    Active active(this, &context);
    v1::JoinRequest request;
    request.set_num_images(train.size());
    request.set_num_validation_images(validation.size());
    v1::JoinReply reply;
    grpc::Status s = federation->Join(&context, request, &reply);
    if (!s.ok()) return FromGrpcStatus(s, "join");
    const v1::ModelSpec& m = reply.model();
    model = {m.in_channels(), m.num_classes(), m.base_width(), m.depth()};
    cut = {m.front_units(), m.back_units()};
    absl::StatusOr<ActivationShapes> cs = CutShapes(model, cut, m.image_height(), m.image_width());
    if (!cs.ok()) return absl::InvalidArgumentError(
        absl::StrCat("the coordinator's model does not build: ", cs.status().message()));
    shapes = *cs;
    if (train.size() == 0) {  // first join: load the data at the run's size
      ASSIGN_OR_RETURN(SegmentationSet data, options.load_data({m.image_height(), m.image_width(),
                                                                m.in_channels(), m.num_classes()}));
      const int64_t n = data.size();
      const int64_t n_val = ValidationImages(n, options.validation_fraction);
      if (n - n_val < 2)
        return absl::InvalidArgumentError(
            absl::StrCat("the site has ", n, " images; it needs at least 2 to train"));
      train = data.Subset(torch::arange(0, n - n_val));
      validation = data.Subset(torch::arange(n - n_val, n));
      LOG(INFO) << "event=data_loaded site=" << name << " train=" << train.size()
                << " validation=" << validation.size();
      return Join();  // report the image count
    }
    LOG(INFO) << "event=joined site=" << name << " run=" << reply.run_id();
    return absl::OkStatus();
  }

  // A round as the coordinator announced it: its settings and the global front and back.
  struct Announcement {
    v1::RoundSettings settings;
    NamedTensors state;
  };

  // What the round's method adds to plain training, decided before the first epoch.
  struct RoundObjective {
    std::unique_ptr<BatchObjective> objective;          // null: plain cross-entropy
    colearning::CoLearningObjective* colearning = nullptr;  // SplitFed-CL's, inside `objective`
    double teacher_loss = 0, boundary_noise = 0, reliability = 1;
  };

  // What the local epochs and the validation produced.
  struct LocalResult {
    double train_loss = 0, validation_dice = 0, validation_loss = 0;
  };

  // Phase 1: waits for the round after `last_round`; std::nullopt when the run is over.
  absl::StatusOr<std::optional<Announcement>> WaitForRound(int64_t last_round) {
    while (true) {
      Announcement a;
      grpc::ClientContext context;
      Prepare(&context);
      // The coordinator answers within its 30 s long-poll; past that the answer was lost and
      // the site asks again (the coordinator then hands out the same round).
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(75));
      Active active(this, &context);
      v1::WaitRoundRequest request;
      request.set_last_round(last_round);
      auto reader = federation->WaitRound(&context, request);
      v1::RoundChunk chunk;
      bool ended = false;
      while (reader->Read(&chunk)) {
        if (chunk.has_finished()) return std::nullopt;
        if (chunk.has_settings()) a.settings = chunk.settings();
        if (chunk.has_state()) RETURN_IF_ERROR(DecodeStateEntry(chunk.state(), &a.state));
        if (chunk.has_end()) ended = true;
      }
      grpc::Status s = reader->Finish();
      if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && !stopping) continue;
      if (!s.ok()) return FromGrpcStatus(s, "wait for round");
      if (!ended || a.settings.round() < 1)
        return absl::UnavailableError("the round announcement was cut short");
      return a;
    }
  }

  // Phase 2: methods with a teacher run it over the training images (its body on the
  // coordinator) and turn its outputs into the round's objective and scalars.
  absl::StatusOr<RoundObjective> PrepareObjective(const SiteRoundMethod& method,
                                                  const Announcement& round, BodyLink& body) {
    const MethodOptions& m = method.options;
    RoundObjective r;
    if (!m.UsesTeacher()) return r;
    SplitModel teacher = MakeSplitModel(model, cut);
    RETURN_IF_ERROR(LoadClientParts(UpdateTeacher(round.state, m.teacher_beta), teacher));
    ASSIGN_OR_RETURN(colearning::TeacherOutputs outputs,
                     colearning::RunTeacher(teacher.front, teacher.back, train, body));
    for (double l : outputs.losses) r.teacher_loss += l / outputs.losses.size();
    switch (m.kind) {
      case MethodKind::kSplitFed:
        break;
      case MethodKind::kFedA3I:
        r.boundary_noise = colearning::BoundaryNoise(
            outputs.labels, train.masks, std::max<int64_t>(1, train.images.size(2) / 32));
        break;
      case MethodKind::kFedNoRo:
        if (method.distil)
          r.objective =
              std::make_unique<colearning::DistillationObjective>(outputs, m.distillation_weight);
        break;
      case MethodKind::kColearning:
        PrepareColearning(method, round, outputs, &r);
        break;
    }
    return r;
  }

  void PrepareColearning(const SiteRoundMethod& method, const Announcement& round,
                         const colearning::TeacherOutputs& outputs, RoundObjective* r) {
    const MethodOptions& m = method.options;
    const int64_t number = round.settings.round();
    colearning::CoLearningRound plan;
    plan.warming_up = method.warming_up;
    plan.refinement = m.refinement;
    plan.kappa = m.kappa;
    plan.consistency = m.consistency;
    plan.consistency_weight = method.consistency_weight;
    plan.learned_loss_weights = m.learned_loss_weights;
    plan.threshold = m.threshold;
    plan.seed = round.settings.shuffle_seed() ^ 0x5eedc0de;
    auto s = round.state.find(kLossLogVariances);
    auto owned = std::make_unique<colearning::CoLearningObjective>(
        plan, outputs, train, s != round.state.end() ? s->second : torch::zeros({3}));
    colearning::CoLearningObjective* cl = owned.get();
    r->colearning = cl;
    r->objective = std::move(owned);
    r->reliability = cl->site_reliability();
    if (options.on_reliability && !plan.warming_up)
      options.on_reliability(number, cl->reliability(), cl->reliable());
    double mean_r = 0;
    for (double x : cl->reliability()) mean_r += x / train.size();
    LOG(INFO) << "event=reliability site=" << name << " round=" << number
              << " q=" << r->reliability << " mean_r=" << mean_r
              << " teacher_loss=" << r->teacher_loss << " warm_up=" << plan.warming_up;
    if (VLOG_IS_ON(1)) {
      std::string detail;
      for (size_t i = 0; i < outputs.losses.size(); ++i)
        absl::StrAppend(&detail, i ? " " : "", cl->reliability()[i], "/", outputs.losses[i]);
      VLOG(1) << "event=reliability_detail site=" << name << " r/loss=" << detail;
    }
  }

  // Phase 3: the local epochs through the coordinator's body, then the validation.
  absl::StatusOr<LocalResult> TrainLocally(const v1::RoundSettings& settings, SplitModel& parts,
                                           BatchObjective* objective, BodyLink& body) {
    TrainerOptions trainer_options;
    trainer_options.learning_rate = settings.learning_rate();
    trainer_options.batch_size = settings.batch_size();
    SiteTrainer trainer(parts.front, parts.back, trainer_options, objective);
    LocalResult result;
    for (int64_t epoch = 0; epoch < settings.local_epochs(); ++epoch) {
      ASSIGN_OR_RETURN(EpochStats stats,
                       trainer.TrainEpoch(train, settings.shuffle_seed() + epoch, body));
      result.train_loss = stats.mean_loss;
      if (options.on_epoch)
        options.on_epoch({settings.round(), epoch + 1, stats.mean_loss, stats.images, stats.seconds});
      LOG(INFO) << "event=epoch site=" << name << " round=" << settings.round()
                << " epoch=" << epoch + 1 << " loss=" << stats.mean_loss
                << " images_per_s=" << stats.images / stats.seconds;
    }
    if (validation.size() > 0) {
      ASSIGN_OR_RETURN(SiteTrainer::Evaluation eval, trainer.Evaluate(validation, body));
      result.validation_dice = eval.scores.MeanForeground().dice;
      result.validation_loss = eval.mean_loss;
    }
    return result;
  }

  // Phase 4: submits the trained front and back with the round's scalars.
  absl::Status Submit(const Announcement& round, const SplitModel& parts,
                      const RoundObjective& objective, const LocalResult& result) {
    grpc::ClientContext context;
    Prepare(&context);
    Active active(this, &context);
    v1::SubmitReply reply;
    auto writer = federation->SubmitUpdate(&context, &reply);
    v1::UpdateChunk chunk;
    v1::UpdateScalars* sc = chunk.mutable_scalars();
    sc->set_round(round.settings.round());
    sc->set_num_images(train.size());
    sc->set_train_loss(result.train_loss);
    sc->set_validation_dice(result.validation_dice);
    sc->set_validation_loss(result.validation_loss);
    sc->set_reliability(objective.reliability);
    sc->set_teacher_loss(objective.teacher_loss);
    sc->set_boundary_noise(objective.boundary_noise);
    bool ok = writer->Write(chunk);
    // SplitFed-CL's loss weights travel (and are averaged) with the back.
    if (round.state.count(kLossLogVariances) && ok) {
      chunk.Clear();
      const torch::Tensor s = objective.colearning ? objective.colearning->log_variances()
                                                   : round.state.at(kLossLogVariances);
      RETURN_IF_ERROR(EncodeStateEntry(kLossLogVariances, s, chunk.mutable_state()));
      ok = writer->Write(chunk);
    }
    for (const auto& [prefix, part] : {std::pair{kFrontPrefix, parts.front}, {kBackPrefix, parts.back}})
      for (const auto& [key, t] : ExtractState(*part)) {
        if (!ok) break;
        chunk.Clear();
        RETURN_IF_ERROR(EncodeStateEntry(prefix + key, t, chunk.mutable_state()));
        ok = writer->Write(chunk);
      }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    return s.ok() ? absl::OkStatus() : FromGrpcStatus(s, "submit update");
  }

  // One round: wait, prepare the method, train and validate over one Split stream, submit.
  // Returns false when the run is over.
  absl::StatusOr<bool> TakePartInRound(SiteRunSummary* summary) {
    ASSIGN_OR_RETURN(std::optional<Announcement> announced, WaitForRound(summary->rounds_completed));
    if (!announced) return false;
    const Announcement& round = *announced;
    const v1::RoundSettings& settings = round.settings;
    LOG(INFO) << "event=round_start site=" << name << " round=" << settings.round() << "/"
              << settings.total_rounds();
    SplitModel parts = MakeSplitModel(model, cut);
    RETURN_IF_ERROR(LoadClientParts(round.state, parts));
    ASSIGN_OR_RETURN(const SiteRoundMethod method, DecodeSiteMethod(settings.method()));

    grpc::ClientContext context;
    Prepare(&context);
    context.set_deadline(std::chrono::system_clock::time_point(
        std::chrono::milliseconds(settings.deadline_unix_ms())));
    Active active(this, &context);
    auto stream = split->Train(&context);
    const WireEncoding encoding = FromWire(settings.activation_encoding());
    StreamBody body(stream.get(), settings.round(), encoding, shapes, CutsRectified(model, cut).a1);
    // Any failure on the stream closes it; the coordinator's reason, when it gave one, wins.
    auto close_stream = [&](const absl::Status& why) -> absl::Status {
      stream->WritesDone();
      grpc::Status s = stream->Finish();
      if (!s.ok()) return FromGrpcStatus(s, "split training");
      return why;
    };
    absl::StatusOr<RoundObjective> objective = PrepareObjective(method, round, body);
    if (!objective.ok()) return close_stream(objective.status());
    absl::StatusOr<LocalResult> result = TrainLocally(settings, parts, objective->objective.get(), body);
    if (!result.ok()) return close_stream(result.status());
    RETURN_IF_ERROR(close_stream(absl::OkStatus()));

    RETURN_IF_ERROR(Submit(round, parts, *objective, *result));
    summary->rounds_completed = settings.round();
    summary->last_train_loss = result->train_loss;
    summary->last_validation_dice = result->validation_dice;
    LOG(INFO) << "event=round_done site=" << name << " round=" << settings.round()
              << " loss=" << result->train_loss << " val_loss=" << result->validation_loss
              << " val_dice=" << result->validation_dice << " bytes_up=" << body.bytes_sent()
              << " bytes_down=" << body.bytes_received();
    return true;
  }
};

int64_t ValidationImages(int64_t images, double fraction) {
  return std::max<int64_t>(images >= 4 ? 1 : 0, static_cast<int64_t>(images * fraction));
}

SiteClient::SiteClient(SiteClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  // The name is the certificate's (the coordinator reads the same); used here for logs only.
  if (impl_->options.tls) {
    auto cn = CertificateCommonName(impl_->options.tls->certificate_pem);
    impl_->name = cn.ok() ? *cn : "(unreadable certificate)";
  } else {
    impl_->name = impl_->options.insecure_site_name;
  }
}

SiteClient::~SiteClient() = default;

void SiteClient::Stop() {
  std::lock_guard<std::mutex> lock(impl_->context_mutex);
  impl_->stopping = true;
  if (impl_->active) impl_->active->TryCancel();
  impl_->stopped.notify_all();
}

absl::StatusOr<SiteRunSummary> SiteClient::Run() {
  Impl& m = *impl_;
  SiteRunSummary summary;
  double backoff = m.options.initial_backoff_seconds;
  int64_t failures = 0;
  bool joined = false;
  m.Connect();
  std::mutex heartbeat_mutex;
  std::condition_variable heartbeat_wake;
  bool heartbeat_done = false;
  std::thread heartbeat;
  if (m.options.heartbeat_seconds > 0)
    heartbeat = std::thread([&] { m.HeartbeatLoop(&heartbeat_mutex, &heartbeat_wake, &heartbeat_done); });
  // However Run() ends, the heartbeat thread ends with it.
  struct StopHeartbeat {
    std::mutex& mutex;
    std::condition_variable& wake;
    bool& done;
    std::thread& thread;
    ~StopHeartbeat() {
      {
        std::lock_guard<std::mutex> lock(mutex);
        done = true;
      }
      wake.notify_all();
      if (thread.joinable()) thread.join();
    }
  } stop_heartbeat{heartbeat_mutex, heartbeat_wake, heartbeat_done, heartbeat};
  while (!m.stopping) {
    absl::Status status;
    if (!joined) {
      status = m.Join();
      joined = status.ok();
      m.joined = joined;
    }
    if (joined) {
      absl::StatusOr<bool> more = m.TakePartInRound(&summary);
      if (more.ok() && !*more) {
        LOG(INFO) << "event=run_finished site=" << m.name
                  << " rounds=" << summary.rounds_completed;
        return summary;
      }
      status = more.status();
      if (status.ok()) {
        backoff = m.options.initial_backoff_seconds;
        failures = 0;
        continue;
      }
    }
    if (m.stopping) break;
    if (!Retryable(status)) return status;  // e.g. refused certificate name: do not hammer
    if (m.options.max_reconnects >= 0 && ++failures > m.options.max_reconnects) return status;
    LOG(WARNING) << "event=retry site=" << m.name << " in_s=" << backoff << " reason=\""
                 << status.message() << "\"";
    m.SleepUnlessStopped(backoff);
    backoff = std::min(backoff * 2, m.options.max_backoff_seconds);
    joined = joined && !MustRejoin(status);
    m.joined = joined;
  }
  return absl::CancelledError("stopped");
}

DataLoader PhantomLoader(uint64_t seed, int64_t count) {
  return [seed, count](const DataRequest& r) {
    PhantomOptions p;
    p.count = count;
    p.height = r.height;
    p.width = r.width;
    p.num_classes = r.num_classes;
    p.seed = seed;
    return GeneratePhantoms(p);
  };
}

}  // namespace splitfed
