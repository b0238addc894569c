#include "monitor/monitor_server.h"

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "monitor/prometheus_text.h"
#include "monitor/web_assets.h"

namespace splitfed {
namespace {

constexpr char kCookie[] = "splitfed_token";

template <typename T>
nlohmann::json Optional(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string CookieValue(const std::string& header, const std::string& name) {
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::StartsWith(part, name + "=")) return std::string(part.substr(name.size() + 1));
  }
  return "";
}

HttpResponse Text(int status, std::string body) {
  return HttpResponse{status, "text/plain; charset=utf-8", std::move(body), {}};
}

}  // namespace

std::string NewAccessToken() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes for a token");
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

std::string SnapshotJson(const MonitorSnapshot& s) {
  nlohmann::json sites = nlohmann::json::array();
  for (const SiteSnapshot& x : s.sites)
    sites.push_back({{"name", x.name},
                     {"joined", x.joined},
                     {"connected", x.connected},
                     {"last_seen_age_seconds", Optional(x.last_seen_age_seconds)},
                     {"images", x.images},
                     {"bytes_received_total", x.bytes_received_total},
                     {"bytes_sent_total", x.bytes_sent_total},
                     {"rounds_included", x.rounds_included},
                     {"failures_total", x.failures_total},
                     {"train_loss", Optional(x.train_loss)},
                     {"validation_dice", Optional(x.validation_dice)},
                     {"reliability", Optional(x.reliability)},
                     {"aggregation_weight", Optional(x.aggregation_weight)}});
  nlohmann::json history = nlohmann::json::array();
  for (const RoundPoint& r : s.history)
    history.push_back({{"round", r.round},
                       {"duration_seconds", r.duration_seconds},
                       {"sites_included", r.sites_included},
                       {"mean_validation_dice", r.mean_validation_dice},
                       {"mean_train_loss", r.mean_train_loss},
                       {"bytes", r.bytes}});
  return nlohmann::json{{"run_id", s.run_id},
                        {"run_name", s.run_name},
                        {"method", s.method},
                        {"mode", s.mode},
                        {"state", s.state},
                        {"current_round", s.current_round},
                        {"rounds_planned", s.rounds_planned},
                        {"rounds_completed", s.rounds_completed},
                        {"resumes", s.resumes},
                        {"stale_updates_total", s.stale_updates_total},
                        {"sites_enrolled", s.sites_enrolled},
                        {"sites", sites},
                        {"history", history}}
      .dump();
}

absl::StatusOr<std::unique_ptr<MonitorServer>> MonitorServer::Start(const std::string& listen,
                                                                    SnapshotSource source,
                                                                    const std::string& token) {
  if (token.size() < 16)
    return absl::InvalidArgumentError("the dashboard's access token must be 16+ characters");
  std::unique_ptr<MonitorServer> m(new MonitorServer());
  m->source_ = std::move(source);
  m->token_ = token;
  MonitorServer* self = m.get();
  auto http = HttpServer::Start(listen, [self](const HttpRequest& r) { return self->Handle(r); });
  if (!http.ok()) return http.status();
  m->http_ = std::move(*http);
  return m;
}

bool MonitorServer::Authorised(const HttpRequest& r) const {
  std::string offered;
  if (auto q = r.query.find("token"); q != r.query.end()) {
    offered = q->second;
  } else if (auto a = r.headers.find("authorization");
             a != r.headers.end() && absl::StartsWith(a->second, "Bearer ")) {
    offered = a->second.substr(7);
  } else if (auto c = r.headers.find("cookie"); c != r.headers.end()) {
    offered = CookieValue(c->second, kCookie);
  }
  return offered.size() == token_.size() &&
         CRYPTO_memcmp(offered.data(), token_.data(), token_.size()) == 0;
}

HttpResponse MonitorServer::Handle(const HttpRequest& r) const {
  if (r.method != "GET" && r.method != "HEAD")
    return Text(405, "read-only: only GET is served\n");
  if (r.path == "/metrics")
    return HttpResponse{200, kPrometheusContentType, PrometheusText(source_()), {}};
  if (absl::StartsWith(r.path, "/static/")) {
    const WebAsset* asset = FindWebAsset(r.path.substr(8));
    if (!asset) return Text(404, "no such file\n");
    return HttpResponse{200, asset->content_type, std::string(asset->content),
                        {{"Cache-Control", "max-age=3600"}}};
  }
  if (r.path != "/" && r.path != "/api/state") return Text(404, "not found\n");
  if (!Authorised(r))
    return Text(401,
                "the dashboard needs the access token the coordinator printed at start: open "
                "/?token=TOKEN\n");
  if (r.path == "/api/state")
    return HttpResponse{200, "application/json", SnapshotJson(source_()), {}};
  const WebAsset* page = FindWebAsset("dashboard.html");
  HttpResponse response{200, page->content_type, std::string(page->content), {}};
  // The page's own requests then carry the token without it showing in every URL.
  response.headers.push_back(
      {"Set-Cookie", absl::StrCat(kCookie, "=", token_, "; HttpOnly; SameSite=Strict; Path=/")});
  response.headers.push_back({"Content-Security-Policy", "default-src 'self'"});
  return response;
}

}  // namespace splitfed
