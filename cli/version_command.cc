#include <CLI/CLI.hpp>
#include <google/protobuf/stubs/common.h>
#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>
#include <torch/version.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/version.h"

namespace splitfed::cli {

void AddVersionCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("version", "Print the versions of SplitFed and its libraries");
  cmd->callback([] {
    std::printf("splitfed %s\n", SPLITFED_VERSION);
    std::printf("libtorch %s\n", TORCH_VERSION);
    std::printf("grpc %s\n", grpc::Version().c_str());
    std::printf("protobuf %s\n",
                google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION).c_str());
    std::printf("openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
  });
}

}  // namespace splitfed::cli
