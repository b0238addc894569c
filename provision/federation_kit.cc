#include "provision/federation_kit.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "provision/certificates.h"
#include "provision/openssl_handles.h"
#include "provision/revocation.h"
#include "status/status_macros.h"

namespace splitfed {
namespace fs = std::filesystem;
namespace {

bool IsIpAddress(const std::string& host) {
  unsigned char buffer[16];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

// Writes a file readable only by its owner when `secret`.
absl::Status WriteFile(const fs::path& path, const std::string& content, bool secret) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path.parent_path().string(), ": ",
                                                          ec.message()));
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot write"));
    if (secret) fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, ec);
    out << content;
    if (!out.flush())
      return absl::DataLossError(absl::StrCat(path.string(), ": write failed (disk full?)"));
  }
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

std::string TomlList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& s : items) quoted.push_back(absl::StrCat("\"", s, "\""));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

std::string TlsSection(const std::string& stem) {
  return absl::StrCat("[tls]\n", "certificate = \"", stem, ".crt\"\n", "private_key = \"", stem,
                      ".key\"\n", "ca_certificate = \"ca.crt\"\n");
}

std::string CoordinatorToml(const KitOptions& o) {
  return absl::StrCat(
      "# SplitFed coordinator, written by `splitfed provision`. Relative paths are relative to\n"
      "# this file. Command-line flags override these values.\n\n",
      "# Address to serve on. 0.0.0.0:", o.port, " to accept sites from other machines.\n",
      "listen = \"127.0.0.1:", o.port, "\"\n",
      "# The run store (SQLite) and the folder for per-round checkpoints.\n",
      "database = \"coordinator.db\"\n", "checkpoints = \"checkpoints\"\n",
      "# Only these certificate names may join.\n", "enrolled_sites = ", TomlList(o.sites),
      "\n\n", TlsSection("coordinator"),
      "# Certificates revoked by `splitfed provision --revoke` (read again when it changes).\n",
      "revocation_list = \"revoked.crl\"\n",
      "\n# /metrics (Prometheus) and the dashboard (its URL with an access token is printed at\n"
      "# start). Off unless a listen address is given; keep it on loopback or a monitoring\n"
      "# network.\n# [monitor]\n# listen = \"127.0.0.1:9464\"\n");
}

std::string ClientToml(const KitOptions& o, const std::string& stem, const std::string& comment) {
  return absl::StrCat("# ", comment, ", written by `splitfed provision`. Relative paths are\n",
                      "# relative to this file. Command-line flags override these values.\n\n",
                      "coordinator = \"127.0.0.1:", o.port, "\"\n\n", TlsSection(stem));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> RevokeSite(const std::string& kit_dir,
                                                    const std::string& site) {
  RETURN_IF_ERROR(ValidateSiteName(site));
  const fs::path kit(kit_dir);
  using openssl_handles::ReadPemFile;
  PemPair ca;
  ASSIGN_OR_RETURN(ca.certificate, ReadPemFile(kit / "ca" / "ca.crt"));
  ASSIGN_OR_RETURN(ca.private_key, ReadPemFile(kit / "ca" / "ca.key"));
  ASSIGN_OR_RETURN(const std::string certificate, ReadPemFile(kit / "sites" / site / "site.crt"));
  // Kits provisioned before revocation existed have no list yet: the first revocation makes it.
  std::string current;
  if (fs::exists(kit / "ca" / "revoked.crl")) {
    ASSIGN_OR_RETURN(current, ReadPemFile(kit / "ca" / "revoked.crl"));
  }
  ASSIGN_OR_RETURN(const std::string revoked, RevokeCertificate(ca, current, certificate));
  // The coordinator may be reading the list: each copy is replaced whole, never rewritten.
  std::vector<std::string> written;
  for (const fs::path& dir : {kit / "ca", kit / "coordinator"}) {
    if (!fs::is_directory(dir)) continue;
    const fs::path target = dir / "revoked.crl";
    const fs::path temporary = dir / "revoked.crl.tmp";
    RETURN_IF_ERROR(WriteFile(temporary, revoked, false));
    std::error_code ec;
    fs::rename(temporary, target, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat(target.string(), ": ", ec.message()));
    written.push_back(target.string());
  }
  return written;
}

absl::Status ValidateSiteName(const std::string& name) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("site name '", name, "' ", why));
  };
  if (name.empty() || name.size() > 63) return bad("must have 1 to 63 characters");
  if (name == "admin" || name == "coordinator" || name == "ca") return bad("is reserved");
  if (!std::isalnum(static_cast<unsigned char>(name[0])) || std::isupper(name[0]))
    return bad("must start with a lower-case letter or a digit");
  for (char c : name)
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return bad("may only hold a-z, 0-9, '-', '_' and '.'");
  return absl::OkStatus();
}

absl::Status ProvisionFederation(const KitOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("provision: --out is required");
  if (o.sites.empty()) return absl::InvalidArgumentError("provision: --sites names no site");
  std::set<std::string> seen;
  for (const std::string& site : o.sites) {
    RETURN_IF_ERROR(ValidateSiteName(site));
    if (!seen.insert(site).second)
      return absl::InvalidArgumentError(absl::StrCat("site '", site, "' is listed twice"));
  }
  if (o.port < 1 || o.port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("port must be in 1..65535, got ", o.port));
  std::error_code ec;
  const fs::path out(o.out_dir);
  if (fs::exists(out, ec) && !fs::is_empty(out, ec) && !o.overwrite)
    return absl::AlreadyExistsError(absl::StrCat(
        o.out_dir, " is not empty; choose a new folder (or --force to overwrite the kits)"));

  ASSIGN_OR_RETURN(PemPair ca, MakeCertificateAuthority("SplitFed federation CA", 10 * 365));
  RETURN_IF_ERROR(WriteFile(out / "ca" / "ca.crt", ca.certificate, false));
  RETURN_IF_ERROR(WriteFile(out / "ca" / "ca.key", ca.private_key, true));

  auto write_kit = [&](const fs::path& dir, const std::string& stem,
                       const CertificateRequest& request, const std::string& toml,
                       const std::string& toml_name) -> absl::Status {
    ASSIGN_OR_RETURN(PemPair pair, IssueCertificate(ca, request));
    RETURN_IF_ERROR(WriteFile(dir / (stem + ".crt"), pair.certificate, false));
    RETURN_IF_ERROR(WriteFile(dir / (stem + ".key"), pair.private_key, true));
    RETURN_IF_ERROR(WriteFile(dir / "ca.crt", ca.certificate, false));
    return WriteFile(dir / toml_name, toml, false);
  };

  CertificateRequest coordinator;
  coordinator.common_name = "coordinator";
  coordinator.organizational_unit = "coordinator";
  coordinator.role = CertificateRole::kServer;
  coordinator.valid_days = o.valid_days;
  coordinator.dns_names = {"localhost", "coordinator"};
  coordinator.ip_addresses = {"127.0.0.1", "::1"};
  for (const std::string& host : o.coordinator_hosts)
    (IsIpAddress(host) ? coordinator.ip_addresses : coordinator.dns_names).push_back(host);
  if (auto s = write_kit(out / "coordinator", "coordinator", coordinator, CoordinatorToml(o),
                         "coordinator.toml");
      !s.ok())
    return s;
  ASSIGN_OR_RETURN(const std::string no_revocations, EmptyRevocationList(ca));
  RETURN_IF_ERROR(WriteFile(out / "ca" / "revoked.crl", no_revocations, false));
  RETURN_IF_ERROR(WriteFile(out / "coordinator" / "revoked.crl", no_revocations, false));

  for (const std::string& site : o.sites) {
    CertificateRequest request;
    request.common_name = site;
    request.organizational_unit = "site";
    request.dns_names = {site};
    request.valid_days = o.valid_days;
    if (auto s = write_kit(out / "sites" / site, "site", request,
                           ClientToml(o, "site", absl::StrCat("SplitFed site '", site, "'")),
                           "site.toml");
        !s.ok())
      return s;
  }

  CertificateRequest admin;
  admin.common_name = "admin";
  admin.organizational_unit = "admin";
  admin.valid_days = o.valid_days;
  return write_kit(out / "admin", "admin", admin,
                   ClientToml(o, "admin", "SplitFed administrator (for `splitfed status`)"),
                   "admin.toml");
}

}  // namespace splitfed
