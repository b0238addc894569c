// The monitor's HTTP side on a real loopback port: the Prometheus page's text, the token that
// guards the dashboard, and requests that are wrong in every way a client can make them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "monitor/http_server.h"
#include "monitor/monitor_server.h"
#include "monitor/prometheus_text.h"

namespace splitfed {
namespace {

// Sends `request` as is to 127.0.0.1:port and returns everything the server answers.
std::string Exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  ::send(fd, request.data(), request.size(), 0);
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) reply.append(buffer, n);
  ::close(fd);
  return reply;
}

std::string Get(int port, const std::string& target, const std::string& headers = "") {
  return Exchange(port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers +
                            "Connection: close\r\n\r\n");
}

MonitorSnapshot TwoSites() {
  MonitorSnapshot s;
  s.run_id = 7;
  s.run_name = "odd \"name\"\\";
  s.method = "splitfed-cl";
  s.mode = "sflv1";
  s.state = "training";
  s.current_round = 3;
  s.rounds_planned = 10;
  s.rounds_completed = 2;
  s.sites_enrolled = 2;
  SiteSnapshot a;
  a.name = "a";
  a.joined = a.connected = true;
  a.last_seen_age_seconds = 1.5;
  a.bytes_received_total = 1234;
  a.aggregation_weight = 0.25;
  a.reliability = 0.9;
  SiteSnapshot b;
  b.name = "b";  // never seen: no age, no weight
  s.sites = {a, b};
  s.history = {{1, 2.0, 1, 0.5, 1.0, 10}, {2, 3.0, 1, 0.75, 0.8, 10}};
  return s;
}

TEST(PrometheusText, NamesValuesAndEscapedLabels) {
  const std::string text = PrometheusText(TwoSites());
  EXPECT_NE(text.find("splitfed_run_info{run_id=\"7\",name=\"odd \\\"name\\\"\\\\\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("splitfed_run_state{state=\"training\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("splitfed_run_state{state=\"waiting\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE splitfed_rounds_completed_total counter\n"
                      "splitfed_rounds_completed_total 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("splitfed_site_received_bytes_total{site=\"a\"} 1234\n"), std::string::npos);
  EXPECT_NE(text.find("splitfed_site_aggregation_weight{site=\"a\"} 0.25\n"), std::string::npos);
  EXPECT_EQ(text.find("splitfed_site_aggregation_weight{site=\"b\"}"), std::string::npos)
      << "a site without a weight has no sample";
  EXPECT_EQ(text.find("splitfed_site_last_seen_age_seconds{site=\"b\"}"), std::string::npos);
  EXPECT_NE(text.find("splitfed_sites_joined 1\n"), std::string::npos);
  EXPECT_NE(text.find("splitfed_validation_dice 0.75\n"), std::string::npos);
}

TEST(MonitorServer, TheDashboardNeedsTheTokenAndBadRequestsLeaveItServing) {
  const std::string token = "0123456789abcdef0123456789abcdef";
  auto server = MonitorServer::Start("127.0.0.1:0", [] { return TwoSites(); }, token);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);

  EXPECT_NE(Get(port, "/metrics").find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(Get(port, "/metrics").find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(Get(port, "/").find("HTTP/1.1 401"), std::string::npos);
  EXPECT_NE(Get(port, "/api/state?token=0123").find("HTTP/1.1 401"), std::string::npos);
  EXPECT_NE(Get(port, "/api/state?token=" + token.substr(0, 31) + "g").find("HTTP/1.1 401"),
            std::string::npos);
  const std::string page = Get(port, "/?token=" + token);
  EXPECT_NE(page.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(page.find("Set-Cookie: splitfed_token=" + token), std::string::npos);
  const std::string by_cookie = Get(port, "/api/state", "Cookie: x=1; splitfed_token=" + token +
                                                            "\r\n");
  EXPECT_NE(by_cookie.find("\"rounds_completed\":2"), std::string::npos) << by_cookie;
  const std::string by_header = Get(port, "/api/state", "Authorization: Bearer " + token + "\r\n");
  EXPECT_NE(by_header.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(Get(port, "/static/uPlot.iife.min.js").find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(Get(port, "/static/../../etc/passwd").find("HTTP/1.1 404"), std::string::npos);
  EXPECT_NE(Get(port, "/nothing").find("HTTP/1.1 404"), std::string::npos);
  EXPECT_NE(Exchange(port, "POST /api/state HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .find("HTTP/1.1 405"),
            std::string::npos);
  // Not HTTP, an oversized header, nothing at all: each gets an answer or a closed socket.
  EXPECT_NE(Exchange(port, "\x16\x03\x01 not http at all\r\n\r\n").find("HTTP/1.1 400"),
            std::string::npos);
  EXPECT_NE(Exchange(port, "GET / HTTP/1.1\r\nX: " + std::string(100000, 'a') + "\r\n\r\n")
                .find("HTTP/1.1 400"),
            std::string::npos);
  EXPECT_EQ(Exchange(port, ""), "");
  EXPECT_NE(Get(port, "/metrics").find("HTTP/1.1 200"), std::string::npos) << "still serving";
  (*server)->Stop();
  EXPECT_EQ(Get(port, "/metrics"), "") << "the port is closed after Stop()";
}

TEST(MonitorServer, RefusesNamesShortTokensAndBusyPorts) {
  auto snapshot = [] { return MonitorSnapshot(); };
  const std::string token(32, 'a');
  EXPECT_TRUE(absl::IsInvalidArgument(
      MonitorServer::Start("localhost:0", snapshot, token).status()))
      << "names are not looked up";
  EXPECT_TRUE(absl::IsInvalidArgument(MonitorServer::Start("127.0.0.1", snapshot, token).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(MonitorServer::Start("127.0.0.1:70000", snapshot, token).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MonitorServer::Start("127.0.0.1:0", snapshot, "x").status()));
  auto first = MonitorServer::Start("127.0.0.1:0", snapshot, token);
  ASSERT_TRUE(first.ok());
  const auto second = MonitorServer::Start(
      "127.0.0.1:" + std::to_string((*first)->port()), snapshot, token);
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_EQ(UrlDecode("a%41b+c%2"), "aAb c%2");
}

}  // namespace
}  // namespace splitfed
