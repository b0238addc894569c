// `splitfed provision`: the federation's CA and one certificate kit per party.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "provision/federation_kit.h"

namespace splitfed::cli {

void AddProvisionCommand(CLI::App& app) {
  auto o = std::make_shared<KitOptions>();
  auto sites = std::make_shared<std::string>();
  auto revoke = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "provision", "Make a CA and certificate kits for the coordinator, each site and an admin");
  cmd->add_option("--out", o->out_dir,
                  "Folder to write the kits into (must be new or empty); with --revoke, the "
                  "folder provisioned earlier")
      ->required();
  CLI::Option* sites_option =
      cmd->add_option("--sites", *sites, "Comma-separated site names, e.g. a,b,c");
  cmd->add_option("--revoke", *revoke,
                  "Revoke the certificate of this site (in OUT/sites/NAME/) instead: the CA's "
                  "revocation list is re-signed, and the coordinator refuses it once its copy "
                  "of revoked.crl is replaced")
      ->excludes(sites_option);
  cmd->add_option("--coordinator-host", o->coordinator_hosts,
                  "Extra host name or IP the coordinator is reached at (repeatable); "
                  "127.0.0.1 and localhost are always included");
  cmd->add_option("--port", o->port, "Coordinator port written into the TOML files")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  cmd->add_option("--days", o->valid_days, "Validity of the issued certificates in days")
      ->check(CLI::Range(1, 3650))
      ->capture_default_str();
  cmd->add_flag("--force", o->overwrite, "Write into a non-empty folder, replacing kits");
  cmd->callback([o, sites, revoke] {
    if (!revoke->empty()) {
      const absl::StatusOr<std::vector<std::string>> written = RevokeSite(o->out_dir, *revoke);
      if (!written.ok()) throw std::runtime_error(std::string(written.status().message()));
      std::printf("revoked the certificate of site %s; revocation list written to:\n",
                  revoke->c_str());
      for (const std::string& path : *written) std::printf("  %s\n", path.c_str());
      std::printf("copy revoked.crl over the coordinator's (its [tls] revocation_list); it is "
                  "read again without a restart\n");
      return;
    }
    if (sites->empty()) throw std::runtime_error("provision: --sites or --revoke is required");
    o->sites = absl::StrSplit(*sites, ',', absl::SkipWhitespace());
    const absl::Status s = ProvisionFederation(*o);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
    std::printf("provisioned %zu sites in %s\n", o->sites.size(), o->out_dir.c_str());
    std::vector<std::pair<std::string, std::string>> rows = {
        {o->out_dir + "/ca/", "CA certificate and key: keep the key offline"},
        {o->out_dir + "/coordinator/", "give to the coordinator host"}};
    for (const std::string& site : o->sites)
      rows.push_back({o->out_dir + "/sites/" + site + "/", "give to site " + site});
    rows.push_back({o->out_dir + "/admin/", "for `splitfed status`"});
    size_t width = 0;
    for (const auto& [path, what] : rows) width = std::max(width, path.size());
    for (const auto& [path, what] : rows)
      std::printf("  %-*s  %s\n", static_cast<int>(width), path.c_str(), what.c_str());
  });
}

}  // namespace splitfed::cli
