// A small HTTP/1.1 server (Boost.Beast) for what administrators read: /metrics and the
// dashboard. One thread, asynchronous connections, each request answered by a handler that
// must be quick (it reads a snapshot). Boost stays out of this header.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace splitfed {

struct HttpRequest {
  std::string method;  // "GET", ...
  std::string path;    // without the query
  std::map<std::string, std::string> query;    // decoded
  std::map<std::string, std::string> headers;  // names in lower case
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Listens on `listen` ("IP:port"; port 0 picks one). Only literal IP addresses: a name is
  // refused rather than looked up.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen,
                                                           HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  void Stop();  // closes the port and every connection; idempotent

 private:
  HttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" ("[::1]:port" for IPv6) and checks the port's range.
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);
// "%41b+c" → "Ab c" (query strings).
std::string UrlDecode(const std::string& text);

}  // namespace splitfed
