// The subcommands of the `splitfed` executable; each file adds one to the app.
#pragma once

#include <stdexcept>
#include <string>

#include "absl/status/statusor.h"

namespace CLI {
class App;
}

namespace splitfed::cli {

// Subcommands report failures by throwing; main() prints one line and exits 1.
template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  if (!value.ok()) throw std::runtime_error(std::string(value.status().message()));
  return *std::move(value);
}
inline void Check(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

void AddVersionCommand(CLI::App& app);
void AddDemoCommand(CLI::App& app);
void AddPhantomsCommand(CLI::App& app);
void AddProvisionCommand(CLI::App& app);
void AddFederationCommands(CLI::App& app);
void AddSegmentCommand(CLI::App& app);
void AddSimCommand(CLI::App& app);

}  // namespace splitfed::cli
