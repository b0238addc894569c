// The subcommands of the `splitfed` executable; each file adds one to the app.
#pragma once

namespace CLI {
class App;
}

namespace splitfed::cli {

void AddVersionCommand(CLI::App& app);
void AddDemoCommand(CLI::App& app);
void AddPhantomsCommand(CLI::App& app);
void AddProvisionCommand(CLI::App& app);
void AddFederationCommands(CLI::App& app);
void AddSegmentCommand(CLI::App& app);

}  // namespace splitfed::cli
