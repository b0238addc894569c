#include "coordinator/services.h"

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/body_session.h"
#include "proto/grpc_status.h"
#include "provision/revocation.h"
#include "proto/method_codec.h"
#include "proto/state_codec.h"
#include "splitfed/v1/federation.grpc.pb.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

// The site's share of the run's method for one round.
void WriteSiteMethod(const MethodOptions& m, const RoundTicket& ticket, v1::SiteMethod* out) {
  SiteRoundMethod method;
  method.options = m;
  method.warming_up = ticket.warming_up;
  method.consistency_weight = ticket.consistency_weight;
  method.distil = ticket.distil;
  EncodeSiteMethod(method, out);
}

bool IsLoopback(const std::string& listen) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         host.rfind("127.", 0) == 0;
}

// Parks WaitRound calls (callback API) until a round opens for their site, the run ends, the
// call is cancelled or its long-poll time runs out. One thread of ours serves every parked
// call, so waiting sites hold no gRPC threads.
class RoundLongPolls {
 public:
  class Call {
   public:
    virtual ~Call() = default;
    virtual const std::string& site() const = 0;
    virtual bool cancelled() const = 0;
    virtual std::chrono::steady_clock::time_point give_up_at() const = 0;
    // Exactly one of these ends the parking; both are called without RoundLongPolls' lock.
    virtual void Deliver(RoundTicket ticket) = 0;
    virtual void End(const grpc::Status& status) = 0;
  };

  explicit RoundLongPolls(Coordinator* coordinator)
      : coordinator_(coordinator), thread_([this] { Loop(); }) {}
  ~RoundLongPolls() { Stop(); }

  // Answers `call` at once if its ticket is ready, else parks it.
  void Park(Call* call) {
    if (Settle(call)) return;
    std::unique_lock<std::mutex> lock(mutex_);
    if (!stopping_) {
      parked_.push_back(call);
      added_.notify_one();
      return;
    }
    lock.unlock();
    EndAtShutdown(call);
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
      added_.notify_one();
    }
    coordinator_->NotifyChange();  // the loop may be waiting on the coordinator
    thread_.join();
  }

 private:
  void EndAtShutdown(Call* call) {
    coordinator_->StopWaiting(call->site());
    call->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"));
  }

  // Ends `call` if it can be ended now; false if it stays parked.
  bool Settle(Call* call) {
    if (call->cancelled()) {
      coordinator_->StopWaiting(call->site());
      call->End(grpc::Status(grpc::StatusCode::CANCELLED, "the site stopped waiting"));
      return true;
    }
    absl::StatusOr<std::optional<RoundTicket>> polled = coordinator_->PollRound(call->site());
    if (!polled.ok()) {
      call->End(ToGrpcStatus(polled.status()));
      return true;
    }
    if (polled->has_value()) {
      call->Deliver(std::move(**polled));
      return true;
    }
    if (std::chrono::steady_clock::now() >= call->give_up_at()) {
      coordinator_->StopWaiting(call->site());
      call->End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                             "no round opened yet; ask again"));
      return true;
    }
    return false;
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      added_.wait(lock, [this] { return stopping_ || !parked_.empty(); });
      std::vector<Call*> calls;
      calls.swap(parked_);
      const bool stopping = stopping_;
      lock.unlock();
      // Read before settling, so that a change while the calls are looked at is not missed.
      const uint64_t seen = coordinator_->ChangeCount();
      std::vector<Call*> still;
      for (Call* call : calls) {
        if (stopping) {
          EndAtShutdown(call);
        } else if (!Settle(call)) {
          still.push_back(call);
        }
      }
      if (stopping) return;
      // Until the coordinator's state changes (a cancelled call and Stop() count as changes)
      // or the first parked call's long-poll time is up.
      if (!still.empty()) {
        auto until = still.front()->give_up_at();
        for (const Call* call : still) until = std::min(until, call->give_up_at());
        coordinator_->WaitForChange(seen, until);
      }
      lock.lock();
      parked_.insert(parked_.end(), still.begin(), still.end());
    }
  }

  Coordinator* coordinator_;
  std::mutex mutex_;
  std::condition_variable added_;
  std::vector<Call*> parked_;
  bool stopping_ = false;
  std::thread thread_;
};

// A unary call answered at once, on gRPC's callback thread.
grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// A callback-API answer that is an error from the start.
template <typename Reactor>
class FailedCall final : public Reactor {
 public:
  explicit FailedCall(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

struct CoordinatorServer::Services {
  Coordinator* coordinator;
  RunStore* store;
  bool tls;
  std::unique_ptr<RevocationFile> revocations;  // null: nothing revoked
  double wait_round_seconds = 30;
  std::unique_ptr<RoundLongPolls> long_polls;

  // Who is calling: the certificate's common name under TLS (refused when the certificate is
  // revoked), the request header when insecure.
  absl::StatusOr<std::string> CallerName(grpc::ServerContextBase* context);

  // The control plane, on gRPC's callback API: no call holds a thread while it waits.
  class FederationImpl final : public v1::Federation::CallbackService {
   public:
    explicit FederationImpl(Services* s) : s_(s) {}

    grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                   const v1::JoinRequest* request,
                                   v1::JoinReply* reply) override {
      return AnswerNow(context, DoJoin(context, *request, reply));
    }

    grpc::ServerWriteReactor<v1::RoundChunk>* WaitRound(grpc::CallbackServerContext* context,
                                                        const v1::WaitRoundRequest*) override {
      absl::StatusOr<std::string> site = s_->CallerName(context);
      if (!site.ok())
        return new FailedCall<grpc::ServerWriteReactor<v1::RoundChunk>>(ToGrpcStatus(site.status()));
      auto* call = new RoundCall(s_, *site);
      s_->long_polls->Park(call);
      return call;
    }

    grpc::ServerReadReactor<v1::UpdateChunk>* SubmitUpdate(grpc::CallbackServerContext* context,
                                                           v1::SubmitReply* reply) override {
      absl::StatusOr<std::string> site = s_->CallerName(context);
      if (!site.ok())
        return new FailedCall<grpc::ServerReadReactor<v1::UpdateChunk>>(ToGrpcStatus(site.status()));
      return new UpdateCall(s_, context, *site, reply);
    }

    grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                        const v1::HeartbeatRequest*,
                                        v1::HeartbeatReply* reply) override {
      absl::StatusOr<std::string> site = s_->CallerName(context);
      if (!site.ok()) return AnswerNow(context, ToGrpcStatus(site.status()));
      s_->coordinator->Heartbeat(*site);
      reply->set_current_round(s_->coordinator->current_round());
      return AnswerNow(context, grpc::Status::OK);
    }

   private:
    grpc::Status DoJoin(grpc::CallbackServerContext* context, const v1::JoinRequest& request,
                        v1::JoinReply* reply) {
      absl::StatusOr<std::string> site = s_->CallerName(context);
      if (!site.ok()) return ToGrpcStatus(site.status());
      if (auto st = s_->coordinator->Join(*site, request.num_images(), request.num_validation_images()); !st.ok()) {
        LOG(WARNING) << "event=join_refused site=" << *site << " reason=\"" << st.message() << "\"";
        return ToGrpcStatus(st);
      }
      LOG(INFO) << "event=join site=" << *site << " images=" << request.num_images();
      const RunOptions& o = s_->coordinator->options();
      reply->set_run_id(s_->coordinator->run_id());
      v1::ModelSpec* m = reply->mutable_model();
      m->set_in_channels(o.model.in_channels);
      m->set_num_classes(o.model.num_classes);
      m->set_base_width(o.model.base_width);
      m->set_depth(o.model.depth);
      m->set_front_units(o.split.front_units);
      m->set_back_units(o.split.back_units);
      m->set_image_height(o.image_size);
      m->set_image_width(o.image_size);
      return grpc::Status::OK;
    }

    // WaitRound: parked until the site's ticket is ready, then streams the round's settings,
    // the global client parts entry by entry, and an end marker.
    class RoundCall final : public grpc::ServerWriteReactor<v1::RoundChunk>,
                            public RoundLongPolls::Call {
     public:
      RoundCall(Services* s, std::string site)
          : s_(s),
            site_(std::move(site)),
            give_up_at_(std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(
                            static_cast<int64_t>(s->wait_round_seconds * 1000))) {}

      const std::string& site() const override { return site_; }
      bool cancelled() const override { return cancelled_; }
      std::chrono::steady_clock::time_point give_up_at() const override { return give_up_at_; }
      void End(const grpc::Status& status) override { Finish(status); }

      void Deliver(RoundTicket ticket) override {
        ticket_ = std::move(ticket);
        next_entry_ = ticket_.client_state.begin();
        if (ticket_.finished) {
          chunk_.set_finished(true);  // the only chunk: OnWriteDone finishes the call
        } else {
          const RunOptions& o = s_->coordinator->options();
          v1::RoundSettings* settings = chunk_.mutable_settings();
          settings->set_round(ticket_.round);
          settings->set_total_rounds(o.rounds);
          settings->set_local_epochs(o.local_epochs);
          settings->set_batch_size(o.batch_size);
          settings->set_learning_rate(o.learning_rate);
          settings->set_activation_encoding(ToWire(o.activation_encoding));
          settings->set_shuffle_seed(ticket_.shuffle_seed);
          settings->set_deadline_unix_ms(ticket_.deadline_unix_ms);
          WriteSiteMethod(o.method, ticket_, settings->mutable_method());
        }
        Write();
      }

      void OnWriteDone(bool ok) override {
        if (ticket_.finished) return Finish(grpc::Status::OK);
        if (!ok) {
          s_->coordinator->MarkFailed(site_, ticket_.round, "lost while receiving the round");
          return Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "site went away"));
        }
        if (done_writing_) {
          s_->coordinator->CountBytes(site_, 0, bytes_);
          LOG(INFO) << "event=round_sent site=" << site_ << " round=" << ticket_.round
                    << " bytes=" << bytes_;
          return Finish(grpc::Status::OK);
        }
        chunk_.Clear();
        if (next_entry_ != ticket_.client_state.end()) {
          const auto& [name, t] = *next_entry_++;
          if (auto st = EncodeStateEntry(name, t, chunk_.mutable_state()); !st.ok()) {
            s_->coordinator->MarkFailed(site_, ticket_.round, std::string(st.message()));
            return Finish(ToGrpcStatus(st));
          }
        } else {
          chunk_.set_end(true);
          done_writing_ = true;
        }
        Write();
      }

      void OnCancel() override {
        cancelled_ = true;
        s_->coordinator->NotifyChange();  // wakes the long-poll thread to end the call
      }
      void OnDone() override { delete this; }

     private:
      void Write() {
        bytes_ += chunk_.ByteSizeLong();
        StartWrite(&chunk_);
      }

      Services* s_;
      const std::string site_;
      const std::chrono::steady_clock::time_point give_up_at_;
      std::atomic<bool> cancelled_{false};
      RoundTicket ticket_;
      NamedTensors::const_iterator next_entry_;
      v1::RoundChunk chunk_;
      bool done_writing_ = false;
      int64_t bytes_ = 0;
    };

    // SubmitUpdate: the scalars first, then the client parts entry by entry; decoded as they
    // arrive, handed to the coordinator at the end.
    class UpdateCall final : public grpc::ServerReadReactor<v1::UpdateChunk> {
     public:
      UpdateCall(Services* s, grpc::CallbackServerContext* context, std::string site,
                 v1::SubmitReply* reply)
          : s_(s), context_(context), site_(std::move(site)), reply_(reply) {
        StartRead(&chunk_);
      }

      void OnReadDone(bool ok) override {
        if (!ok) return Complete();
        bytes_ += chunk_.ByteSizeLong();
        if (absl::Status st = reader_.Add(chunk_); !st.ok()) {
          // Before valid scalars there is no round to mark failed: the stream is only refused.
          if (!reader_.has_scalars()) return Finish(ToGrpcStatus(st));
          return Refuse(st);
        }
        StartRead(&chunk_);
      }

      void OnDone() override { delete this; }

     private:
      void Refuse(const absl::Status& st) {
        LOG(WARNING) << "event=update_refused site=" << site_ << " reason=\"" << st.message()
                     << "\"";
        s_->coordinator->MarkFailed(site_, reader_.round(),
                                    absl::StrCat("update refused: ", st.message()));
        Finish(ToGrpcStatus(st));
      }

      // The stream ended: a whole update (unless the site went away on the way).
      void Complete() {
        const int64_t round = reader_.round();
        absl::StatusOr<SiteSubmission> submission = std::move(reader_).Finish();
        if (!submission.ok()) return Finish(ToGrpcStatus(submission.status()));
        if (context_->IsCancelled()) {
          s_->coordinator->MarkFailed(site_, round, "lost while sending its update");
          return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "site went away"));
        }
        s_->coordinator->CountBytes(site_, bytes_, 0);
        if (auto st = s_->coordinator->Submit(site_, *std::move(submission)); !st.ok()) {
          LOG(WARNING) << "event=update_refused site=" << site_ << " round=" << round
                       << " reason=\"" << st.message() << "\"";
          return Finish(ToGrpcStatus(st));
        }
        LOG(INFO) << "event=update site=" << site_ << " round=" << round << " bytes=" << bytes_;
        reply_->set_accepted(true);
        Finish(grpc::Status::OK);
      }

      Services* s_;
      grpc::CallbackServerContext* context_;
      const std::string site_;
      v1::SubmitReply* reply_;
      v1::UpdateChunk chunk_;
      UpdateReader reader_{site_};
      int64_t bytes_ = 0;
    };

    Services* s_;
  };

  class SplitImpl final : public v1::Split::Service {
   public:
    explicit SplitImpl(Services* s) : s_(s) {}

    grpc::Status Train(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::SplitMessage, v1::SplitMessage>* stream)
        override {
      absl::StatusOr<std::string> site = s_->CallerName(context);
      if (!site.ok()) return ToGrpcStatus(site.status());
      v1::SplitMessage in, out;
      BodySession session(s_->coordinator, *site);
      int64_t bytes_in = 0, bytes_out = 0;
      // Any error ends the stream and leaves the site out of this round: its body copy may be
      // half-way through a step. Other sites are not affected.
      auto fail = [&](const absl::Status& st) {
        LOG(WARNING) << "event=split_error site=" << *site << " round=" << in.round()
                     << " reason=\"" << st.message() << "\"";
        s_->coordinator->MarkFailed(*site, in.round(), std::string(st.message()));
        s_->coordinator->CountBytes(*site, bytes_in, bytes_out);
        return ToGrpcStatus(st);
      };
      while (stream->Read(&in)) {
        bytes_in += in.ByteSizeLong();
        if (auto st = session.Answer(in, &out); !st.ok()) return fail(st);
        bytes_out += out.ByteSizeLong();
        if (!stream->Write(out)) break;
        if (auto st = session.AnswerSent(); !st.ok()) return fail(st);
      }
      s_->coordinator->CountBytes(*site, bytes_in, bytes_out);
      if (context->IsCancelled()) {
        s_->coordinator->MarkFailed(*site, session.round(), "connection lost during training");
        return grpc::Status(grpc::StatusCode::CANCELLED, "site went away");
      }
      return grpc::Status::OK;
    }

   private:
    Services* s_;
  };

  class AdminImpl final : public v1::Admin::CallbackService {
   public:
    explicit AdminImpl(Services* s) : s_(s) {}

    // A few SQLite reads: answered on the callback thread.
    grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                     const v1::StatusRequest*, v1::StatusReply* reply) override {
      return AnswerNow(context, Answer(context, reply));
    }

   private:
    grpc::Status Answer(grpc::CallbackServerContext* context, v1::StatusReply* reply) {
      absl::StatusOr<std::string> caller = s_->CallerName(context);
      if (!caller.ok()) return ToGrpcStatus(caller.status());
      if (s_->tls && *caller != "admin")
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "status needs the administrator's certificate");
      if (!s_->store)
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this coordinator keeps no run store");
      auto runs = s_->store->Runs();
      if (!runs.ok()) return ToGrpcStatus(runs.status());
      for (const RunRecord& run : *runs) {
        v1::RunStatus* r = reply->add_runs();
        r->set_id(run.id);
        r->set_name(run.name);
        r->set_status(run.status);
        if (run.id == s_->coordinator->run_id()) {
          r->set_current_round(s_->coordinator->current_round());
          r->set_total_rounds(s_->coordinator->options().rounds);
        }
        r->set_resumed(run.resumed);
        auto rounds = s_->store->Rounds(run.id);
        if (rounds.ok())
          for (const RoundRecord& rr : *rounds) {
            r->set_completed_rounds(r->completed_rounds() + (rr.state == "completed" ? 1 : 0));
            v1::RoundStatus* round = r->add_rounds();
            round->set_round(rr.round);
            round->set_state(rr.state);
            round->set_attempt(rr.attempt);
          }
        auto sites = s_->store->Sites(run.id);
        auto metrics = s_->store->Metrics(run.id);
        if (!sites.ok()) continue;
        for (const SiteRecord& site : *sites) {
          v1::SiteStatus* ss = r->add_sites();
          ss->set_name(site.name);
          ss->set_connected(site.connected);
          ss->set_last_seen(site.last_seen);
          ss->set_images(site.images);
          if (!metrics.ok()) continue;
          for (const SiteRoundMetrics& m : *metrics) {  // ordered by round: the last one wins
            if (m.site != site.name || !m.train_loss) continue;
            ss->set_has_metrics(true);
            ss->set_last_loss(*m.train_loss);
            ss->set_validation_dice(m.validation_dice.value_or(0));
            ss->set_aggregation_weight(m.aggregation_weight.value_or(0));
            ss->set_reliability(m.reliability.value_or(1));
          }
        }
      }
      return grpc::Status::OK;
    }

    Services* s_;
  };

  std::unique_ptr<FederationImpl> federation;
  std::unique_ptr<SplitImpl> split;
  std::unique_ptr<AdminImpl> admin;
};

absl::StatusOr<std::string> CoordinatorServer::Services::CallerName(
    grpc::ServerContextBase* context) {
  if (!tls) {
    const auto& headers = context->client_metadata();
    auto it = headers.find("x-splitfed-site");
    if (it == headers.end())
      return absl::UnauthenticatedError("insecure mode: the x-splitfed-site header is missing");
    return std::string(it->second.data(), it->second.size());
  }
  auto auth = context->auth_context();
  const auto names =
      auth ? auth->FindPropertyValues("x509_common_name") : std::vector<grpc::string_ref>{};
  if (names.empty()) return absl::UnauthenticatedError("no client certificate with a common name");
  std::string name(names.front().data(), names.front().size());
  if (revocations) {
    const auto pems = auth->FindPropertyValues("x509_pem_cert");
    if (pems.empty())
      return absl::UnauthenticatedError("the client certificate is not available to check");
    absl::StatusOr<bool> revoked =
        revocations->IsRevoked(std::string(pems.front().data(), pems.front().size()));
    if (!revoked.ok()) return revoked.status();
    if (*revoked) {
      LOG(WARNING) << "event=revoked_certificate site=" << name;
      return absl::PermissionDeniedError(
          absl::StrCat("the certificate of '", name, "' is revoked"));
    }
  }
  return name;
}

absl::StatusOr<TlsFiles> ReadTlsFiles(const std::string& certificate, const std::string& key,
                                      const std::string& ca) {
  auto read = [](const std::string& path, std::string* out) -> absl::Status {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
    std::stringstream s;
    s << in.rdbuf();
    *out = s.str();
    if (out->find("-----BEGIN") == std::string::npos)
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a PEM file"));
    return absl::OkStatus();
  };
  TlsFiles files;
  RETURN_IF_ERROR(read(certificate, &files.certificate_pem));
  RETURN_IF_ERROR(read(key, &files.private_key_pem));
  RETURN_IF_ERROR(read(ca, &files.ca_certificate_pem));
  return files;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, RunStore* store, const std::string& listen,
    const std::optional<TlsFiles>& tls, double wait_round_seconds) {
  if (!tls && !listen.empty() && !IsLoopback(listen))
    return absl::InvalidArgumentError(absl::StrCat(
        "insecure mode may only listen on loopback (127.0.0.1), not '", listen, "'"));
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->services_ = std::make_unique<Services>();
  Services& s = *server->services_;
  s.coordinator = coordinator;
  s.store = store;
  s.tls = tls.has_value();
  if (tls && !tls->revocation_list_path.empty()) {
    ASSIGN_OR_RETURN(s.revocations,
                     RevocationFile::Open(tls->revocation_list_path, tls->ca_certificate_pem));
  }
  s.wait_round_seconds = wait_round_seconds;
  s.long_polls = std::make_unique<RoundLongPolls>(coordinator);
  s.federation = std::make_unique<Services::FederationImpl>(&s);
  s.split = std::make_unique<Services::SplitImpl>(&s);
  s.admin = std::make_unique<Services::AdminImpl>(&s);

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls) {
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = tls->ca_certificate_pem;
    options.pem_key_cert_pairs.push_back({tls->private_key_pem, tls->certificate_pem});
    credentials = grpc::SslServerCredentials(options);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  if (!listen.empty()) builder.AddListeningPort(listen, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(s.federation.get());
  builder.RegisterService(s.split.get());
  builder.RegisterService(s.admin.get());
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || (!listen.empty() && server->port_ == 0))
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen,
                                               " (address in use, or not an address here?)"));
  LOG(INFO) << "event=listening address=" << listen << " port=" << server->port_
            << " tls=" << (tls ? "mutual" : "OFF");
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

std::shared_ptr<grpc::Channel> CoordinatorServer::InProcessChannel(
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
        interceptors) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  if (interceptors.empty()) return server_->InProcessChannel(args);
  return server_->experimental().InProcessChannelWithInterceptors(args, std::move(interceptors));
}

void CoordinatorServer::Shutdown() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
    services_->long_polls->Stop();  // after the server: it ends parked calls while shutting down
  }
}

}  // namespace splitfed
