#include "coordinator/services.h"

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "proto/state_codec.h"
#include "splitfed/v1/federation.grpc.pb.h"

namespace splitfed {
namespace {

// The site's share of the run's method for one round.
void WriteSiteMethod(const MethodOptions& m, const RoundTicket& ticket, v1::SiteMethod* out) {
  if (m.name == "splitfed-cl") out->set_kind(v1::SiteMethod::COLEARNING);
  if (m.name == "fednoro") out->set_kind(v1::SiteMethod::FEDNORO);
  if (m.name == "feda3i") out->set_kind(v1::SiteMethod::FEDA3I);
  out->set_warming_up(ticket.warming_up);
  out->set_refinement(m.refinement == RefinementMode::kHard  ? v1::SiteMethod::REFINE_HARD
                      : m.refinement == RefinementMode::kOff ? v1::SiteMethod::REFINE_OFF
                                                             : v1::SiteMethod::REFINE_SOFT);
  out->set_kappa(m.kappa);
  out->set_consistency(m.consistency);
  out->set_consistency_weight(m.ConsistencyWeight(ticket.round));
  out->set_learned_loss_weights(m.learned_loss_weights);
  out->set_tau_min(m.threshold.tau_min);
  out->set_min_gap(m.threshold.min_gap);
  out->set_fixed_tau(m.threshold.fixed_tau);
  out->set_distil(ticket.distil);
  out->set_distillation_weight(m.distillation_weight);
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Who is calling: the certificate's common name under TLS, the request header when insecure.
absl::StatusOr<std::string> CallerName(grpc::ServerContext* context, bool tls) {
  if (tls) {
    auto auth = context->auth_context();
    const auto names = auth ? auth->FindPropertyValues("x509_common_name")
                            : std::vector<grpc::string_ref>{};
    if (names.empty())
      return absl::UnauthenticatedError("no client certificate with a common name");
    return std::string(names.front().data(), names.front().size());
  }
  const auto& headers = context->client_metadata();
  auto it = headers.find("x-splitfed-site");
  if (it == headers.end())
    return absl::UnauthenticatedError("insecure mode: the x-splitfed-site header is missing");
  return std::string(it->second.data(), it->second.size());
}

bool IsLoopback(const std::string& listen) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         host.rfind("127.", 0) == 0;
}

v1::Encoding EncodingOf(WireEncoding e) {
  return e == WireEncoding::kFp16 ? v1::ENCODING_FP16 : v1::ENCODING_FP32;
}

}  // namespace

struct CoordinatorServer::Services {
  Coordinator* coordinator;
  RunStore* store;
  bool tls;

  class FederationImpl final : public v1::Federation::Service {
   public:
    explicit FederationImpl(Services* s) : s_(s) {}

    grpc::Status Join(grpc::ServerContext* context, const v1::JoinRequest* request,
                      v1::JoinReply* reply) override {
      absl::StatusOr<std::string> site = CallerName(context, s_->tls);
      if (!site.ok()) return ToGrpc(site.status());
      if (auto st = s_->coordinator->Join(*site, request->num_images()); !st.ok()) {
        LOG(WARNING) << "event=join_refused site=" << *site << " reason=\"" << st.message() << "\"";
        return ToGrpc(st);
      }
      LOG(INFO) << "event=join site=" << *site << " images=" << request->num_images();
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

    grpc::Status WaitRound(grpc::ServerContext* context, const v1::WaitRoundRequest*,
                           grpc::ServerWriter<v1::RoundChunk>* writer) override {
      absl::StatusOr<std::string> site = CallerName(context, s_->tls);
      if (!site.ok()) return ToGrpc(site.status());
      absl::StatusOr<RoundTicket> ticket = s_->coordinator->WaitRound(
          *site, 30.0, [context] { return context->IsCancelled(); });
      if (!ticket.ok()) return ToGrpc(ticket.status());
      v1::RoundChunk chunk;
      if (ticket->finished) {
        chunk.set_finished(true);
        writer->Write(chunk);
        return grpc::Status::OK;
      }
      const RunOptions& o = s_->coordinator->options();
      v1::RoundSettings* settings = chunk.mutable_settings();
      settings->set_round(ticket->round);
      settings->set_total_rounds(o.rounds);
      settings->set_local_epochs(o.local_epochs);
      settings->set_batch_size(o.batch_size);
      settings->set_learning_rate(o.learning_rate);
      settings->set_activation_encoding(EncodingOf(o.activation_encoding));
      settings->set_shuffle_seed(ticket->shuffle_seed);
      settings->set_deadline_unix_ms(ticket->deadline_unix_ms);
      WriteSiteMethod(o.method, *ticket, settings->mutable_method());
      int64_t bytes = chunk.ByteSizeLong();
      bool ok = writer->Write(chunk);
      for (const auto& [name, t] : ticket->client_state) {
        if (!ok) break;
        chunk.Clear();
        if (auto st = EncodeStateEntry(name, t, chunk.mutable_state()); !st.ok()) return ToGrpc(st);
        bytes += chunk.ByteSizeLong();
        ok = writer->Write(chunk);
      }
      chunk.Clear();
      chunk.set_end(true);
      if (!ok || !writer->Write(chunk)) {
        s_->coordinator->MarkFailed(*site, ticket->round, "lost while receiving the round");
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "site went away");
      }
      s_->coordinator->CountBytes(*site, 0, bytes);
      LOG(INFO) << "event=round_sent site=" << *site << " round=" << ticket->round
                << " bytes=" << bytes;
      return grpc::Status::OK;
    }

    grpc::Status SubmitUpdate(grpc::ServerContext* context,
                              grpc::ServerReader<v1::UpdateChunk>* reader,
                              v1::SubmitReply* reply) override {
      absl::StatusOr<std::string> site = CallerName(context, s_->tls);
      if (!site.ok()) return ToGrpc(site.status());
      v1::UpdateChunk chunk;
      if (!reader->Read(&chunk) || !chunk.has_scalars())
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "an update starts with its scalars");
      SiteSubmission submission;
      const v1::UpdateScalars& sc = chunk.scalars();
      submission.round = sc.round();
      submission.num_images = sc.num_images();
      submission.train_loss = sc.train_loss();
      submission.validation_loss = sc.validation_loss();
      submission.validation_dice = sc.validation_dice();
      submission.reliability = sc.reliability();
      submission.teacher_loss = sc.teacher_loss();
      submission.boundary_noise = sc.boundary_noise();
      if (auto st = CheckSubmissionScalars(*site, submission); !st.ok()) {
        LOG(WARNING) << "event=update_refused site=" << *site << " reason=\"" << st.message()
                     << "\"";
        s_->coordinator->MarkFailed(*site, submission.round,
                                    absl::StrCat("update refused: ", st.message()));
        return ToGrpc(st);
      }
      int64_t bytes = chunk.ByteSizeLong();
      while (reader->Read(&chunk)) {
        bytes += chunk.ByteSizeLong();
        if (!chunk.has_state())
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "after the scalars an update holds only state entries");
        if (auto st = DecodeStateEntry(chunk.state(), &submission.client_state); !st.ok()) {
          LOG(WARNING) << "event=update_refused site=" << *site << " reason=\"" << st.message()
                       << "\"";
          s_->coordinator->MarkFailed(*site, submission.round,
                                      absl::StrCat("update refused: ", st.message()));
          return ToGrpc(st);
        }
      }
      s_->coordinator->CountBytes(*site, bytes, 0);
      const int64_t round = submission.round;
      if (auto st = s_->coordinator->Submit(*site, std::move(submission)); !st.ok()) {
        LOG(WARNING) << "event=update_refused site=" << *site << " round=" << round
                     << " reason=\"" << st.message() << "\"";
        return ToGrpc(st);
      }
      LOG(INFO) << "event=update site=" << *site << " round=" << round << " bytes=" << bytes;
      reply->set_accepted(true);
      return grpc::Status::OK;
    }

    grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest*,
                           v1::HeartbeatReply* reply) override {
      absl::StatusOr<std::string> site = CallerName(context, s_->tls);
      if (!site.ok()) return ToGrpc(site.status());
      s_->coordinator->Heartbeat(*site);
      reply->set_current_round(s_->coordinator->current_round());
      return grpc::Status::OK;
    }

   private:
    Services* s_;
  };

  class SplitImpl final : public v1::Split::Service {
   public:
    explicit SplitImpl(Services* s) : s_(s) {}

    grpc::Status Train(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::SplitMessage, v1::SplitMessage>* stream)
        override {
      absl::StatusOr<std::string> site = CallerName(context, s_->tls);
      if (!site.ok()) return ToGrpc(site.status());
      v1::SplitMessage in, out;
      int64_t round = 0, bytes_in = 0, bytes_out = 0;
      // Any error ends the stream and leaves the site out of this round: its body copy may be
      // half-way through a step. Other sites are not affected.
      auto fail = [&](const absl::Status& st) {
        LOG(WARNING) << "event=split_error site=" << *site << " round=" << round << " reason=\""
                     << st.message() << "\"";
        s_->coordinator->MarkFailed(*site, round, std::string(st.message()));
        s_->coordinator->CountBytes(*site, bytes_in, bytes_out);
        return ToGrpc(st);
      };
      while (stream->Read(&in)) {
        bytes_in += in.ByteSizeLong();
        round = in.round();
        if (auto st = s_->coordinator->WaitForTurn(*site, round); !st.ok()) return fail(st);
        // Decoding, the body's step and encoding the reply all run where the coordinator
        // runs its tensor work (see Coordinator::RunTensorWork).
        absl::Status handled;
        const absl::Status ran = s_->coordinator->RunTensorWork(round, [&] {
          handled = Answer(*site, in, &out);
        });
        if (!ran.ok()) return fail(ran);
        if (!handled.ok()) return fail(handled);
        bytes_out += out.ByteSizeLong();
        if (!stream->Write(out)) break;
        // The body's optimiser steps while the site back-propagates g1 through its front.
        if (in.kind() == v1::SplitMessage::GRADIENT) {
          if (auto st = s_->coordinator->FinishBodyStep(*site, round); !st.ok()) return fail(st);
        }
      }
      s_->coordinator->CountBytes(*site, bytes_in, bytes_out);
      if (context->IsCancelled()) {
        s_->coordinator->MarkFailed(*site, round, "connection lost during training");
        return grpc::Status(grpc::StatusCode::CANCELLED, "site went away");
      }
      return grpc::Status::OK;
    }

   private:
    // One split message in, its answer out: a1 → a2, g2 → g1, and so on.
    absl::Status Answer(const std::string& site, const v1::SplitMessage& in,
                        v1::SplitMessage* out) {
      const int64_t round = in.round();
      DecodeLimits limits;
      limits.expected_dtype = v1::DTYPE_FLOAT32;
      limits.reject_non_finite = true;
      const char* what = in.kind() == v1::SplitMessage::GRADIENT ? "g2" : "a1";
      absl::StatusOr<torch::Tensor> t = DecodeTensor(in.tensor(), limits, what);
      if (!t.ok()) return t.status();
      absl::StatusOr<torch::Tensor> reply;
      switch (in.kind()) {
        case v1::SplitMessage::ACTIVATION:
          reply = s_->coordinator->Forward(site, round, *t);
          break;
        case v1::SplitMessage::GRADIENT:
          reply = s_->coordinator->Backward(site, round, *t);
          break;
        case v1::SplitMessage::EVAL:
          reply = s_->coordinator->Evaluate(site, round, *t);
          break;
        case v1::SplitMessage::TEACHER:
          reply = s_->coordinator->Teacher(site, round, *t);
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("unknown split message kind ", static_cast<int>(in.kind())));
      }
      if (!reply.ok()) return reply.status();
      out->Clear();
      out->set_kind(in.kind());
      out->set_round(round);
      out->set_step(in.step());
      const WireEncoding encoding = in.tensor().encoding() == v1::ENCODING_FP16
                                        ? WireEncoding::kFp16
                                        : WireEncoding::kFp32;
      return EncodeTensor(*reply, encoding, out->mutable_tensor());
    }

    Services* s_;
  };

  class AdminImpl final : public v1::Admin::Service {
   public:
    explicit AdminImpl(Services* s) : s_(s) {}

    grpc::Status Status(grpc::ServerContext* context, const v1::StatusRequest*,
                        v1::StatusReply* reply) override {
      absl::StatusOr<std::string> caller = CallerName(context, s_->tls);
      if (!caller.ok()) return ToGrpc(caller.status());
      if (s_->tls && *caller != "admin")
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "status needs the administrator's certificate");
      if (!s_->store)
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this coordinator keeps no run store");
      auto runs = s_->store->Runs();
      if (!runs.ok()) return ToGrpc(runs.status());
      for (const RunRecord& run : *runs) {
        v1::RunStatus* r = reply->add_runs();
        r->set_id(run.id);
        r->set_name(run.name);
        r->set_status(run.status);
        if (run.id == s_->coordinator->run_id()) {
          r->set_current_round(s_->coordinator->current_round());
          r->set_total_rounds(s_->coordinator->options().rounds);
        }
        auto rounds = s_->store->Rounds(run.id);
        if (rounds.ok())
          for (const RoundRecord& rr : *rounds) r->set_completed_rounds(
              r->completed_rounds() + (rr.state == "completed" ? 1 : 0));
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

   private:
    Services* s_;
  };

  std::unique_ptr<FederationImpl> federation;
  std::unique_ptr<SplitImpl> split;
  std::unique_ptr<AdminImpl> admin;
};

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
  if (auto s = read(certificate, &files.certificate_pem); !s.ok()) return s;
  if (auto s = read(key, &files.private_key_pem); !s.ok()) return s;
  if (auto s = read(ca, &files.ca_certificate_pem); !s.ok()) return s;
  return files;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, RunStore* store, const std::string& listen,
    const std::optional<TlsFiles>& tls) {
  if (!tls && !listen.empty() && !IsLoopback(listen))
    return absl::InvalidArgumentError(absl::StrCat(
        "insecure mode may only listen on loopback (127.0.0.1), not '", listen, "'"));
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->services_ = std::make_unique<Services>();
  Services& s = *server->services_;
  s.coordinator = coordinator;
  s.store = store;
  s.tls = tls.has_value();
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
  }
}

}  // namespace splitfed
