#include "monitor/http_server.h"

#include <glog/logging.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace splitfed {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr auto kIdleTimeout = std::chrono::seconds(15);
constexpr size_t kMaxRequestBytes = 64 * 1024;  // administrators' GETs are small

HttpRequest ToRequest(const http::request<http::string_body>& r) {
  HttpRequest out;
  out.method = std::string(r.method_string());
  const std::string target(r.target());
  const size_t q = target.find('?');
  out.path = UrlDecode(target.substr(0, q));
  if (q != std::string::npos)
    for (absl::string_view pair : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      out.query[UrlDecode(kv.first)] = UrlDecode(kv.second);
    }
  for (const auto& field : r) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(field.value());
  }
  return out;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpHandler& handler)
      : stream_(std::move(socket)), handler_(handler) {}

  void Read() {
    parser_.emplace();
    parser_->body_limit(kMaxRequestBytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnRead(ec);
                     });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) return Close();
    if (ec) {  // malformed or oversized: say so and close
      return Answer(400, "bad request: " + ec.message() + "\n", false);
    }
    const http::request<http::string_body>& request = parser_->get();
    HttpResponse response;
    try {
      response = handler_(ToRequest(request));
    } catch (const std::exception& e) {
      LOG(WARNING) << "event=http_error reason=\"" << e.what() << "\"";
      response = HttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
    }
    res_ = {};
    res_.version(request.version());
    res_.result(static_cast<http::status>(response.status));
    res_.set(http::field::server, "splitfed");
    res_.set(http::field::content_type, response.content_type);
    res_.set(http::field::cache_control, "no-store");
    for (const auto& [name, value] : response.headers) res_.set(name, value);
    res_.body() = std::move(response.body);
    res_.keep_alive(request.keep_alive());
    res_.prepare_payload();
    Write();
  }

  void Answer(int status, std::string body, bool keep_alive) {
    res_ = {};
    res_.version(11);
    res_.result(static_cast<http::status>(status));
    res_.set(http::field::content_type, "text/plain; charset=utf-8");
    res_.body() = std::move(body);
    res_.keep_alive(keep_alive);
    res_.prepare_payload();
    Write();
  }

  void Write() {
    stream_.expires_after(kIdleTimeout);
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec || !self->res_.keep_alive()) return self->Close();
      self->Read();
    });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  const HttpHandler& handler_;
};

}  // namespace

struct HttpServer::Impl {
  net::io_context io{1};
  tcp::acceptor acceptor{io};
  HttpHandler handler;
  std::thread thread;
  int port = 0;
  bool stopped = false;

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;  // closed by Stop()
      if (!ec) std::make_shared<Session>(std::move(socket), handler)->Read();
      Accept();
    });
  }
};

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not an address: expected IP:PORT, e.g. 127.0.0.1:9464"));
  *host = address.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  if (!absl::SimpleAtoi(address.substr(colon + 1), port) || *port < 0 || *port > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': the port must be a number in [0, 65535]"));
  return absl::OkStatus();
}

std::string UrlDecode(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) &&
               std::isxdigit(text[i + 2])) {
      out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              HttpHandler handler) {
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(listen, &host, &port); !s.ok()) return s;
  beast::error_code ec;
  const net::ip::address ip = net::ip::make_address(host, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("'", host, "' is not an IP address (names are not looked up)"));
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->impl_ = std::make_unique<Impl>();
  Impl& m = *server->impl_;
  m.handler = std::move(handler);
  const tcp::endpoint endpoint(ip, static_cast<unsigned short>(port));
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen, ": ", ec.message()));
  m.port = m.acceptor.local_endpoint().port();
  m.Accept();
  m.thread = std::thread([&m] { m.io.run(); });
  return server;
}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  // On the server's thread: the port closes before the loop ends (the connections with it).
  net::post(impl_->io, [m = impl_.get()] {
    beast::error_code ignored;
    m->acceptor.close(ignored);
    m->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace splitfed
