// The coordinator's HTTP side for administrators, on its own port (off unless configured):
//   /metrics          Prometheus text (open, like any scrape target: bind it to loopback or a
//                     monitoring network)
//   /                 the read-only dashboard   } need the access token printed at start,
//   /api/state        its JSON (the snapshot)   } as ?token=, a Bearer header or the cookie
//   /static/...       the page's script and the vendored plotting library
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "monitor/http_server.h"
#include "monitor/snapshot.h"

namespace splitfed {

class MonitorServer {
 public:
  using SnapshotSource = std::function<MonitorSnapshot()>;
  // `token` must be at least 16 characters (NewAccessToken() makes one).
  static absl::StatusOr<std::unique_ptr<MonitorServer>> Start(const std::string& listen,
                                                              SnapshotSource source,
                                                              const std::string& token);
  int port() const { return http_->port(); }
  void Stop() { http_->Stop(); }

 private:
  MonitorServer() = default;
  HttpResponse Handle(const HttpRequest& request) const;
  bool Authorised(const HttpRequest& request) const;

  SnapshotSource source_;
  std::string token_;
  std::unique_ptr<HttpServer> http_;
};

// 32 hex digits from OpenSSL's random generator.
std::string NewAccessToken();
// The snapshot as the dashboard's JSON.
std::string SnapshotJson(const MonitorSnapshot& snapshot);

}  // namespace splitfed
