// The coordinator's gRPC server: Federation, Split and Admin services over mutual TLS.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/client_interceptor.h>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"
#include "store/run_store.h"

namespace grpc {
class Channel;
class Server;
}  // namespace grpc

namespace splitfed {

struct TlsFiles {
  std::string certificate_pem;
  std::string private_key_pem;
  std::string ca_certificate_pem;
  // The CA's revocation list (a CRL file); empty: no certificate is revoked. It is read again
  // whenever it changes, so a revocation takes effect without a restart.
  std::string revocation_list_path;
};

// Reads the three PEM files, with errors that name the file.
absl::StatusOr<TlsFiles> ReadTlsFiles(const std::string& certificate, const std::string& key,
                                      const std::string& ca);

class CoordinatorServer {
 public:
  // Serves on `listen` ("host:port"; port 0 picks one). With `tls`, every client must present
  // a certificate from the same CA (the site's name is its certificate's common name) that
  // is not on the revocation list (PERMISSION_DENIED if it is); without
  // it (insecure mode), `listen` must be a loopback address and the site's name is read from
  // the "x-splitfed-site" request header. An empty `listen` opens no port at all: the server is
  // then reachable only through InProcessChannel() (the simulator's transport).
  // `coordinator` and `store` must outlive the server. A WaitRound call is answered within
  // `wait_round_seconds` (DEADLINE_EXCEEDED if no round opened for the site by then: it asks
  // again).
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      Coordinator* coordinator, RunStore* store, const std::string& listen,
      const std::optional<TlsFiles>& tls, double wait_round_seconds = 30);
  ~CoordinatorServer();

  int port() const { return port_; }
  // A channel into this server without sockets (same process); insecure-mode identity.
  // `interceptors` see every call (tests record what a site sends with them).
  std::shared_ptr<grpc::Channel> InProcessChannel(
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
          interceptors = {});
  void Shutdown();

 private:
  CoordinatorServer() = default;
  struct Services;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace splitfed
