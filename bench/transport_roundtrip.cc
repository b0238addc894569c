// What one split exchange costs the transport alone: a site sends a SplitMessage carrying
// `--bytes` of tensor data and waits for an equally large answer, over the Split service's
// bidirectional stream. The server only echoes, so the time is gRPC's (HTTP/2, TLS, copies,
// threads), not LibTorch's. Compares mutual TLS on loopback, plain TCP and the in-process
// channel, and the server written with gRPC's synchronous API against its callback API.
// `--connections N` splits each message's bytes over N connections (N TLS sessions) written
// and read in parallel, to see whether encryption spread over the cores shortens an exchange.
// `--chunks N` sends each connection's share as N messages on its stream (all written, then
// all read), to see whether one side encrypting a chunk while the other decrypts the one before
// helps.
//
//   build/bench/bench_transport_roundtrip [--bytes N,...] [--exchanges N] [--connections N]
//                                         [--chunks N] [--out FILE]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "proto/state_codec.h"
#include "provision/certificates.h"
#include "process/allocator.h"
#include "splitfed/v1/federation.grpc.pb.h"

namespace {

using splitfed::v1::SplitMessage;

// The synchronous API: one handler thread per stream reads and writes.
// With --chunks N each message arrives as N messages: all are read, then all echoed.
int g_chunks = 1;
class SyncEcho final : public splitfed::v1::Split::Service {
  grpc::Status Train(grpc::ServerContext*,
                     grpc::ServerReaderWriter<SplitMessage, SplitMessage>* stream) override {
    std::vector<SplitMessage> m(g_chunks);
    while (true) {
      for (auto& x : m)
        if (!stream->Read(&x)) return grpc::Status::OK;
      for (auto& x : m)
        if (!stream->Write(x)) return grpc::Status::OK;
    }
  }
};

// The callback API: gRPC's own threads run OnReadDone/OnWriteDone; nothing blocks.
class CallbackEcho final : public splitfed::v1::Split::CallbackService {
  class Reactor final : public grpc::ServerBidiReactor<SplitMessage, SplitMessage> {
   public:
    Reactor() { StartRead(&message_); }
    void OnReadDone(bool ok) override {
      if (!ok) return Finish(grpc::Status::OK);
      StartWrite(&message_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(grpc::Status::OK);
      StartRead(&message_);
    }
    void OnDone() override { delete this; }

   private:
    SplitMessage message_;
  };
  grpc::ServerBidiReactor<SplitMessage, SplitMessage>* Train(
      grpc::CallbackServerContext*) override {
    return new Reactor();
  }
};

struct Pki {
  splitfed::PemPair ca, server, client;
};

Pki MakePki() {
  Pki p;
  p.ca = *splitfed::MakeCertificateAuthority("bench-ca", 1);
  splitfed::CertificateRequest server;
  server.common_name = "coordinator";
  server.role = splitfed::CertificateRole::kServer;
  server.ip_addresses = {"127.0.0.1"};
  p.server = *splitfed::IssueCertificate(p.ca, server);
  splitfed::CertificateRequest client;
  client.common_name = "site";
  p.client = *splitfed::IssueCertificate(p.ca, client);
  return p;
}

struct Result {
  std::string transport, server_api;
  int64_t bytes = 0;
  double median_us = 0, p90_us = 0;
};

// gRPC integer channel arguments (name, value), set on both ends.
using IntArgs = std::vector<std::pair<std::string, int>>;

Result Measure(const std::string& transport, const std::string& api, int64_t bytes,
               int exchanges, const Pki& pki, const IntArgs& grpc_args, int connections) {
  SyncEcho sync_echo;
  CallbackEcho callback_echo;
  grpc::ServerBuilder builder;
  int port = 0;
  if (transport == "mtls") {
    grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    o.pem_root_certs = pki.ca.certificate;
    o.pem_key_cert_pairs.push_back({pki.server.private_key, pki.server.certificate});
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(o), &port);
  } else if (transport == "tcp") {
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  }
  for (const auto& [name, value] : grpc_args) builder.AddChannelArgument(name, value);
  builder.SetMaxReceiveMessageSize(splitfed::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(splitfed::kMaxMessageBytes);
  if (api == "sync")
    builder.RegisterService(&sync_echo);
  else
    builder.RegisterService(&callback_echo);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();

  // One channel per connection: a distinct channel argument keeps gRPC from sharing one
  // TCP connection (and one TLS session) between them.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int c = 0; c < connections; ++c) {
    grpc::ChannelArguments args;
    for (const auto& [name, value] : grpc_args) args.SetInt(name, value);
    args.SetInt("splitfed.bench.connection", c);
    args.SetMaxReceiveMessageSize(splitfed::kMaxMessageBytes);
    args.SetMaxSendMessageSize(splitfed::kMaxMessageBytes);
    const std::string target = "127.0.0.1:" + std::to_string(port);
    if (transport == "mtls") {
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = pki.ca.certificate;
      o.pem_private_key = pki.client.private_key;
      o.pem_cert_chain = pki.client.certificate;
      channels.push_back(grpc::CreateCustomChannel(target, grpc::SslCredentials(o), args));
    } else if (transport == "tcp") {
      channels.push_back(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    } else {
      channels.push_back(server->InProcessChannel(args));
    }
  }

  // Each connection carries its share of the bytes; an exchange ends when every share is back.
  struct Lane {
    std::unique_ptr<splitfed::v1::Split::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<SplitMessage, SplitMessage>> stream;
    SplitMessage out, in;
  };
  std::vector<std::unique_ptr<Lane>> lanes;
  for (int c = 0; c < connections; ++c) {
    auto lane = std::make_unique<Lane>();
    lane->stub = splitfed::v1::Split::NewStub(channels[c]);
    lane->stream = lane->stub->Train(&lane->context);
    lane->out.set_kind(SplitMessage::ACTIVATION);
    // The connection's share of the bytes, sent as g_chunks messages of (about) equal size.
    const int64_t share = bytes / connections + (c < bytes % connections ? 1 : 0);
    lane->out.mutable_tensor()->set_data(std::string((share + g_chunks - 1) / g_chunks, '\x01'));
    lanes.push_back(std::move(lane));
  }
  // All of a lane's chunks are written before its answers are read.
  auto exchange = [](Lane* lane) {
    for (int c = 0; c < g_chunks; ++c)
      if (!lane->stream->Write(lane->out)) return false;
    for (int c = 0; c < g_chunks; ++c)
      if (!lane->stream->Read(&lane->in)) return false;
    return true;
  };
  std::vector<double> us;
  const int warmup = 10;
  for (int i = 0; i < warmup + exchanges; ++i) {
    const auto start = std::chrono::steady_clock::now();
    // A new thread per extra connection and exchange (tens of µs) counts against splitting;
    // a client built this way would keep its threads.
    std::vector<std::future<bool>> others;
    for (int c = 1; c < connections; ++c)
      others.push_back(std::async(std::launch::async, exchange, lanes[c].get()));
    bool ok = exchange(lanes[0].get());
    for (auto& f : others) ok = f.get() && ok;
    if (!ok) {
      std::fprintf(stderr, "stream broke after %d exchanges\n", i);
      std::exit(1);
    }
    const auto end = std::chrono::steady_clock::now();
    if (i >= warmup) us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  for (auto& lane : lanes) {
    lane->stream->WritesDone();
    lane->stream->Finish();
  }
  server->Shutdown();
  std::sort(us.begin(), us.end());
  return {transport, api, bytes, us[us.size() / 2], us[us.size() * 9 / 10]};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Round-trip time of one split exchange, transport only (an echo server)."};
  std::vector<int64_t> sizes = {443136, 886272};
  int exchanges = 200;
  std::string out_path;
  app.add_option("--bytes", sizes, "tensor bytes per message (default: one site's a1 at batch 4 "
                                   "and 8, 64x64, fp32)")->delimiter(',');
  app.add_option("--exchanges", exchanges, "timed exchanges per configuration")->check(
      CLI::PositiveNumber);
  std::vector<std::string> arg_texts;
  std::vector<std::string> transports = {"mtls", "tcp", "inprocess"};
  app.add_option("--arg", arg_texts, "a gRPC integer channel argument NAME=VALUE for both ends");
  app.add_option("--transports", transports, "mtls, tcp, inprocess")->delimiter(',');
  app.add_option("--out", out_path, "also write the results as JSON here");
  int connections = 1;
  app.add_option("--connections", connections,
                 "split each message over this many connections, sent in parallel")
      ->check(CLI::Range(1, 64));
  app.add_option("--chunks", g_chunks, "send each connection's share as this many messages "
                 "(sync server only)")->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);
  splitfed::KeepTrainingBuffersInHeap();  // as `splitfed` runs

  IntArgs grpc_args;
  for (const std::string& a : arg_texts) {
    const auto eq = a.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "--arg %s: expected NAME=VALUE\n", a.c_str());
      return 2;
    }
    const std::string value = a.substr(eq + 1);
    char* end = nullptr;
    const long parsed = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0') {
      std::fprintf(stderr, "--arg %s: the value must be an integer\n", a.c_str());
      return 2;
    }
    grpc_args.emplace_back(a.substr(0, eq), static_cast<int>(parsed));
  }
  const Pki pki = MakePki();
  nlohmann::json results = nlohmann::json::array();
  std::printf("%-10s %-9s %10s %12s %12s %10s\n", "transport", "server", "bytes", "median us",
              "p90 us", "MB/s");
  for (int64_t bytes : sizes)
    for (const std::string& transport : transports)
      for (const char* api : {"sync", "callback"}) {
        if (g_chunks > 1 && std::string(api) == "callback") continue;
        const Result r = Measure(transport, api, bytes, exchanges, pki, grpc_args, connections);
        // Two messages of `bytes` cross per exchange.
        const double mb_per_s = 2.0 * bytes / r.median_us;
        std::printf("%-10s %-9s %10lld %12.0f %12.0f %10.0f\n", transport.c_str(), api,
                    static_cast<long long>(bytes), r.median_us, r.p90_us, mb_per_s);
        results.push_back({{"transport", transport},
                           {"server_api", api},
                           {"bytes", bytes},
                           {"median_us", r.median_us},
                           {"p90_us", r.p90_us}});
      }
  if (!out_path.empty()) std::ofstream(out_path) << results.dump(2) << "\n";
  return 0;
}
