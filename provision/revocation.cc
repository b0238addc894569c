#include "provision/revocation.h"

#include <glog/logging.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>


#include "absl/strings/str_cat.h"
#include "provision/openssl_handles.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

using openssl_handles::Bio;
using openssl_handles::Cert;
using openssl_handles::Deleter;
using openssl_handles::Fail;
using openssl_handles::Key;
using openssl_handles::OpenSslError;
using openssl_handles::ParseCertificate;
using openssl_handles::ParseKey;
using openssl_handles::ReadPemFile;
using Crl = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;
using Time = std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME, ASN1_TIME_free>>;

std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

absl::StatusOr<Crl> ParseCrl(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Crl crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (!crl) return absl::InvalidArgumentError("not a PEM revocation list: " + OpenSslError());
  return crl;
}

// The list must be the CA's: its issuer is the CA's subject and the CA's key signed it.
absl::Status CheckSignedBy(X509_CRL* crl, X509* ca) {
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0)
    return absl::PermissionDeniedError("the revocation list was not issued by this CA");
  if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1)
    return absl::PermissionDeniedError(
        "the revocation list's signature does not verify against the CA");
  return absl::OkStatus();
}

std::string ToPem(X509_CRL* crl) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_CRL(bio.get(), crl);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size);
}

// A version-2 list by `ca` holding `serials` (each revoked now unless it was already listed,
// in which case its first revocation date is kept) and signed with SHA-256.
absl::StatusOr<std::string> SignList(const PemPair& ca, X509_CRL* previous,
                                     const ASN1_INTEGER* added) {
  ASSIGN_OR_RETURN(Cert ca_cert, ParseCertificate(ca.certificate));
  ASSIGN_OR_RETURN(Key ca_key, ParseKey(ca.private_key));
  Crl crl(X509_CRL_new());
  Time now(X509_gmtime_adj(nullptr, 0));
  if (!crl || !now || !X509_CRL_set_version(crl.get(), 1) ||
      !X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca_cert.get())) ||
      !X509_CRL_set1_lastUpdate(crl.get(), now.get()))
    return Fail("building the revocation list");
  auto add = [&](const ASN1_INTEGER* serial, const ASN1_TIME* when) -> absl::Status {
    X509_REVOKED* entry = X509_REVOKED_new();
    if (!entry || !X509_REVOKED_set_serialNumber(entry, const_cast<ASN1_INTEGER*>(serial)) ||
        !X509_REVOKED_set_revocationDate(entry, const_cast<ASN1_TIME*>(when)) ||
        !X509_CRL_add0_revoked(crl.get(), entry)) {
      X509_REVOKED_free(entry);
      return Fail("adding a revoked serial");
    }
    return absl::OkStatus();
  };
  if (previous) {
    STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(previous);
    for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
      const X509_REVOKED* entry = sk_X509_REVOKED_value(entries, i);
      RETURN_IF_ERROR(add(X509_REVOKED_get0_serialNumber(entry),
                          X509_REVOKED_get0_revocationDate(entry)));
    }
  }
  if (added) RETURN_IF_ERROR(add(added, now.get()));
  X509_CRL_sort(crl.get());
  if (!X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()))
    return Fail("signing the revocation list");
  return ToPem(crl.get());
}

}  // namespace

absl::StatusOr<std::string> EmptyRevocationList(const PemPair& ca) {
  return SignList(ca, nullptr, nullptr);
}

absl::StatusOr<std::string> RevokeCertificate(const PemPair& ca, const std::string& current_crl,
                                              const std::string& certificate) {
  ASSIGN_OR_RETURN(Cert ca_cert, ParseCertificate(ca.certificate));
  ASSIGN_OR_RETURN(Cert cert, ParseCertificate(certificate));
  if (X509_check_issued(ca_cert.get(), cert.get()) != X509_V_OK ||
      X509_verify(cert.get(), X509_get0_pubkey(ca_cert.get())) != 1)
    return absl::InvalidArgumentError("this certificate was not issued by the federation's CA");
  Crl previous;
  if (!current_crl.empty()) {
    ASSIGN_OR_RETURN(previous, ParseCrl(current_crl));
    RETURN_IF_ERROR(CheckSignedBy(previous.get(), ca_cert.get()));
    X509_REVOKED* found = nullptr;
    if (X509_CRL_get0_by_serial(previous.get(), &found, X509_get_serialNumber(cert.get())) == 1)
      return absl::AlreadyExistsError(absl::StrCat(
          "certificate ", SerialHex(X509_get_serialNumber(cert.get())), " is already revoked"));
  }
  return SignList(ca, previous.get(), X509_get_serialNumber(cert.get()));
}

absl::StatusOr<RevocationList> RevocationList::Parse(const std::string& crl_pem,
                                                     const std::string& ca_certificate) {
  ASSIGN_OR_RETURN(Cert ca, ParseCertificate(ca_certificate));
  ASSIGN_OR_RETURN(Crl crl, ParseCrl(crl_pem));
  RETURN_IF_ERROR(CheckSignedBy(crl.get(), ca.get()));
  RevocationList list;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i)
    list.serials_.insert(
        SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(entries, i))));
  return list;
}

absl::StatusOr<bool> RevocationList::IsRevoked(const std::string& certificate_pem) const {
  ASSIGN_OR_RETURN(Cert cert, ParseCertificate(certificate_pem));
  return serials_.count(SerialHex(X509_get_serialNumber(cert.get()))) > 0;
}

absl::StatusOr<std::unique_ptr<RevocationFile>> RevocationFile::Open(
    const std::filesystem::path& path, const std::string& ca_certificate) {
  std::unique_ptr<RevocationFile> file(new RevocationFile(path, ca_certificate));
  ASSIGN_OR_RETURN(const Stamp stamp, file->CurrentStamp());
  RETURN_IF_ERROR(file->Reload(stamp));
  return file;
}

absl::StatusOr<RevocationFile::Stamp> RevocationFile::CurrentStamp() const {
  std::error_code ec;
  Stamp stamp;
  stamp.time = std::filesystem::last_write_time(path_, ec);
  if (!ec) stamp.size = std::filesystem::file_size(path_, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path_.string(), ": ", ec.message()));
  return stamp;
}

absl::Status RevocationFile::Reload(const Stamp& stamp) {
  ASSIGN_OR_RETURN(const std::string text, ReadPemFile(path_));
  absl::StatusOr<RevocationList> list = RevocationList::Parse(text, ca_);
  if (!list.ok())
    return absl::Status(list.status().code(),
                        absl::StrCat(path_.string(), ": ", list.status().message()));
  list_ = *std::move(list);
  seen_ = stamp;
  return absl::OkStatus();
}

absl::StatusOr<bool> RevocationFile::IsRevoked(const std::string& certificate_pem) {
  std::lock_guard<std::mutex> lock(mutex_);
  const absl::StatusOr<Stamp> stamp = CurrentStamp();
  if (!stamp.ok() || !(*stamp == seen_)) {
    if (absl::Status s = stamp.ok() ? Reload(*stamp) : stamp.status(); s.ok()) {
      LOG(INFO) << "event=revocation_list_read path=" << path_.string()
                << " revoked=" << list_.size();
      last_problem_.clear();
    } else if (s.message() != last_problem_) {
      // Keep what was in force and try again on the next call; say so once per problem.
      last_problem_ = std::string(s.message());
      LOG(WARNING) << "event=revocation_list_unreadable reason=\"" << s.message()
                   << "\" keeping=" << list_.size();
    }
  }
  return list_.IsRevoked(certificate_pem);
}

}  // namespace splitfed
