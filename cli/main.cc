// `splitfed`: one executable, one subcommand per job. See `splitfed --help`.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "process/allocator.h"
#include "process/openmp_wait.h"

int main(int argc, char** argv) {
  // Only where the two sides of the cut take turns (and `version`, which reports what they
  // run with): re-executing loads LibTorch twice, ~0.45 s that `status` or `provision` need
  // not pay.
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "coordinator" || command == "client" || command == "sim" ||
      command == "version")
    splitfed::ShortenOpenMpSpin(argv);
  splitfed::KeepTrainingBuffersInHeap();
  CLI::App app{"SplitFed: split federated learning for medical image segmentation"};
  app.require_subcommand(1);
  splitfed::cli::AddVersionCommand(app);
  splitfed::cli::AddDemoCommand(app);
  splitfed::cli::AddPhantomsCommand(app);
  splitfed::cli::AddProvisionCommand(app);
  splitfed::cli::AddFederationCommands(app);
  splitfed::cli::AddSegmentCommand(app);
  splitfed::cli::AddSimCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // c10::Error and friends: one line, not a stack dump.
    std::string message = e.what();
    if (auto nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
    std::fprintf(stderr, "splitfed: error: %s\n", message.c_str());
    return 1;
  }
  return 0;
}
