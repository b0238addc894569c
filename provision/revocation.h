// Certificate revocation: an X.509 revocation list (CRL) signed by the federation's CA, which
// `splitfed provision --revoke NAME` extends and the coordinator reads. Revocation goes by
// serial number, so a site given a new certificate after a revocation can join again.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "provision/certificates.h"

namespace splitfed {

// A new revocation list (PEM) signed by `ca`: every entry of `current_crl` (empty: none) plus
// `certificate`. Revoking a certificate twice is refused (ALREADY_EXISTS), as is a
// certificate the CA did not issue.
absl::StatusOr<std::string> RevokeCertificate(const PemPair& ca, const std::string& current_crl,
                                              const std::string& certificate);

// An empty revocation list signed by `ca` (what provisioning writes).
absl::StatusOr<std::string> EmptyRevocationList(const PemPair& ca);

// The serial numbers a revocation list names, after checking that `ca_certificate` signed it.
class RevocationList {
 public:
  static absl::StatusOr<RevocationList> Parse(const std::string& crl_pem,
                                              const std::string& ca_certificate);

  // Whether the PEM certificate's serial number is on the list.
  absl::StatusOr<bool> IsRevoked(const std::string& certificate_pem) const;
  size_t size() const { return serials_.size(); }

 private:
  std::set<std::string> serials_;  // upper-case hex
};

// The coordinator's view of its revocation list file, read again whenever the file changes so
// that a revocation takes effect without a restart. A change that does not parse or verify is
// logged and the previous list stays in force (revocations are never dropped silently).
class RevocationFile {
 public:
  // Reads `path` now: a missing or invalid list at start is an error.
  static absl::StatusOr<std::unique_ptr<RevocationFile>> Open(const std::filesystem::path& path,
                                                              const std::string& ca_certificate);

  absl::StatusOr<bool> IsRevoked(const std::string& certificate_pem);

 private:
  // The file's modification time and size: a change in either means it was replaced.
  struct Stamp {
    std::filesystem::file_time_type time{};
    uintmax_t size = 0;
    bool operator==(const Stamp& o) const { return time == o.time && size == o.size; }
  };
  RevocationFile(std::filesystem::path path, std::string ca) : path_(std::move(path)), ca_(ca) {}
  absl::StatusOr<Stamp> CurrentStamp() const;
  absl::Status Reload(const Stamp& stamp);  // `stamp`: the file's, just taken

  std::filesystem::path path_;
  std::string ca_;
  std::mutex mutex_;
  Stamp seen_;  // the stamp of the list in force
  RevocationList list_;
  std::string last_problem_;  // the last reload failure logged, so it is logged once
};

}  // namespace splitfed
