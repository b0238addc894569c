// Certificates for mutual TLS, made with the OpenSSL library (EC P-256, SHA-256).
// Torch-free and gRPC-free: provisioning is an administrator's offline job.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace splitfed {

// A certificate and its private key, both PEM-encoded.
struct PemPair {
  std::string certificate;
  std::string private_key;
};

enum class CertificateRole {
  kServer,  // the coordinator: serverAuth, SANs for its host names and addresses
  kClient,  // a site or an administrator: clientAuth
};

struct CertificateRequest {
  std::string common_name;        // the site's name for site certificates
  std::string organizational_unit;  // "site", "admin" or "coordinator"
  CertificateRole role = CertificateRole::kClient;
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries
  int valid_days = 365;
  int not_before_offset_days = 0;  // negative to back-date (tests make expired certificates)
};

// A self-signed certificate authority (CA:TRUE, keyCertSign), valid `valid_days` days.
absl::StatusOr<PemPair> MakeCertificateAuthority(const std::string& name, int valid_days);

// A certificate for `request`, signed by `ca`.
absl::StatusOr<PemPair> IssueCertificate(const PemPair& ca, const CertificateRequest& request);

// Checks that `certificate` chains to `ca_certificate` and is within its validity period.
absl::Status VerifyCertificate(const std::string& certificate, const std::string& ca_certificate);

// The subject's commonName of a PEM certificate.
absl::StatusOr<std::string> CertificateCommonName(const std::string& certificate);

}  // namespace splitfed
