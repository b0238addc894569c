// Ctrl-C and SIGTERM for long-running subcommands, through Boost.Asio's signal_set on a
// thread of its own (so the handler may take locks, unlike a raw signal handler).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <functional>
#include <thread>

namespace splitfed::cli {

// Runs `on_signal` once on SIGINT or SIGTERM, from a Boost.Asio thread, for as long as it
// lives. The default handlers return when it is destroyed.
class SignalWatch {
 public:
  explicit SignalWatch(std::function<void(int)> on_signal)
      : signals_(io_, SIGINT, SIGTERM), thread_() {
    signals_.async_wait([on_signal](const boost::system::error_code& error, int signal) {
      if (!error) on_signal(signal);
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  ~SignalWatch() {
    io_.stop();
    thread_.join();
  }

 private:
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  std::thread thread_;
};

}  // namespace splitfed::cli
