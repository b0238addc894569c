#include <CLI/CLI.hpp>
#include <google/protobuf/stubs/common.h>
#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>
#include <torch/version.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "cli/commands.h"
#include "cli/version.h"
#include "proto/sparse_kernels.h"

namespace splitfed::cli {
namespace {

// The BLAS library LibTorch loaded (Debian's alternatives pick it): the reference
// implementation trains several times slower than OpenBLAS, so say which one this is.
std::string LoadedBlas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto path = line.find('/');
    if (path == std::string::npos) continue;
    const std::string file = line.substr(path);
    if (file.find("/libblas.so") == std::string::npos &&
        file.find("/libopenblas") == std::string::npos)
      continue;
    if (file.find("openblas") != std::string::npos) return "OpenBLAS (" + file + ")";
    return "reference BLAS, slow: install libopenblas0-openmp (" + file + ")";
  }
  return "unknown";
}

}  // namespace

void AddVersionCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("version", "Print the versions of SplitFed and its libraries");
  cmd->callback([] {
    std::printf("splitfed %s\n", SPLITFED_VERSION);
    std::printf("libtorch %s\n", TORCH_VERSION);
    std::printf("grpc %s\n", grpc::Version().c_str());
    std::printf("protobuf %s\n",
                google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION).c_str());
    std::printf("openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
    std::printf("blas %s\n", LoadedBlas().c_str());
    std::printf("codec kernels %s\n", sparse::HasVectorKernels() ? "avx2+f16c" : "portable");
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    std::printf("openmp GOMP_SPINCOUNT=%s OMP_WAIT_POLICY=%s\n", spin ? spin : "(unset)",
                policy ? policy : "(unset)");
  });
}

}  // namespace splitfed::cli
