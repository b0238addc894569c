// `splitfed provision`: a certificate authority and one kit per party, laid out as
//   OUT/ca/           ca.crt, ca.key, revoked.crl  (the administrator keeps this; never copied)
//   OUT/coordinator/  coordinator.crt/.key, ca.crt, revoked.crl, coordinator.toml
//   OUT/sites/NAME/   site.crt/.key, ca.crt, site.toml
//   OUT/admin/        admin.crt/.key, ca.crt, admin.toml
// The tomls work as written on one machine (coordinator on 127.0.0.1).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace splitfed {

struct KitOptions {
  std::string out_dir;
  std::vector<std::string> sites;
  std::vector<std::string> coordinator_hosts;  // extra SANs (DNS names or IP addresses)
  int port = 50051;
  int valid_days = 365;
  bool overwrite = false;  // allow writing into a non-empty out_dir
};

// A site name: 1–63 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit;
// "admin" and "coordinator" are reserved.
absl::Status ValidateSiteName(const std::string& name);

absl::Status ProvisionFederation(const KitOptions& options);

// `splitfed provision --revoke NAME`: adds the certificate in OUT/sites/NAME/ to the CA's
// revocation list and replaces OUT/ca/revoked.crl (and OUT/coordinator/revoked.crl when that
// kit is still here). Returns the files written; the coordinator's copy must reach its host.
absl::StatusOr<std::vector<std::string>> RevokeSite(const std::string& kit_dir,
                                                    const std::string& site);

}  // namespace splitfed
