#include "provision/certificates.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "provision/openssl_handles.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

using openssl_handles::Bio;
using openssl_handles::Cert;
using openssl_handles::Fail;
using openssl_handles::Key;
using openssl_handles::ParseCertificate;
using openssl_handles::ParseKey;
using openssl_handles::Store;
using openssl_handles::StoreCtx;

std::string ToPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size);
}

std::string ToPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size);
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return Fail(absl::StrCat("certificate extension ", OBJ_nid2sn(nid), "=", value));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? absl::OkStatus() : Fail("adding a certificate extension");
}

// A certificate skeleton: version 3, random 159-bit serial, validity, subject, public key.
absl::StatusOr<Cert> NewCertificate(EVP_PKEY* key, const std::string& common_name,
                                    const std::string& unit, int valid_days,
                                    int not_before_offset_days) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[20];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Fail("random serial number");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  const long day = 24L * 60 * 60;
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_offset_days * day - 60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  (static_cast<long>(not_before_offset_days) + valid_days) * day);
  X509_NAME* name = X509_get_subject_name(cert.get());
  const auto* cn = reinterpret_cast<const unsigned char*>(common_name.c_str());
  const auto* ou = reinterpret_cast<const unsigned char*>(unit.c_str());
  if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>("SplitFed"), -1, -1, 0) ||
      (!unit.empty() && !X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, ou, -1, -1, 0)) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, cn, -1, -1, 0))
    return Fail("certificate subject");
  if (!X509_set_pubkey(cert.get(), key)) return Fail("certificate public key");
  return cert;
}

absl::StatusOr<Key> NewKey() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return Fail("generating an EC P-256 key");
  return key;
}

}  // namespace

absl::StatusOr<PemPair> MakeCertificateAuthority(const std::string& name, int valid_days) {
  ASSIGN_OR_RETURN(Key key, NewKey());
  ASSIGN_OR_RETURN(Cert cert, NewCertificate(key.get(), name, "ca", valid_days, 0));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  for (const auto& [nid, value] :
       std::vector<std::pair<int, std::string>>{{NID_basic_constraints, "critical,CA:TRUE"},
                                                {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                                {NID_subject_key_identifier, "hash"}})
    RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), nid, value));
  if (!X509_sign(cert.get(), key.get(), EVP_sha256())) return Fail("signing the CA");
  return PemPair{ToPem(cert.get()), ToPem(key.get())};
}

absl::StatusOr<PemPair> IssueCertificate(const PemPair& ca, const CertificateRequest& request) {
  if (request.common_name.empty())
    return absl::InvalidArgumentError("a certificate needs a common name");
  ASSIGN_OR_RETURN(Cert ca_cert, ParseCertificate(ca.certificate));
  ASSIGN_OR_RETURN(Key ca_key, ParseKey(ca.private_key));
  ASSIGN_OR_RETURN(Key key, NewKey());
  ASSIGN_OR_RETURN(Cert cert,
                   NewCertificate(key.get(), request.common_name, request.organizational_unit,
                                  request.valid_days, request.not_before_offset_days));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));

  std::vector<std::string> alt_names;
  for (const std::string& dns : request.dns_names) alt_names.push_back("DNS:" + dns);
  for (const std::string& ip : request.ip_addresses) alt_names.push_back("IP:" + ip);
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature,keyAgreement"},
      {NID_ext_key_usage, request.role == CertificateRole::kServer ? "serverAuth" : "clientAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"}};
  if (!alt_names.empty())
    extensions.push_back({NID_subject_alt_name, absl::StrJoin(alt_names, ",")});
  for (const auto& [nid, value] : extensions)
    RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), nid, value));
  if (!X509_sign(cert.get(), ca_key.get(), EVP_sha256()))
    return Fail("signing the certificate of " + request.common_name);
  return PemPair{ToPem(cert.get()), ToPem(key.get())};
}

absl::Status VerifyCertificate(const std::string& certificate,
                               const std::string& ca_certificate) {
  ASSIGN_OR_RETURN(Cert cert, ParseCertificate(certificate));
  ASSIGN_OR_RETURN(Cert ca, ParseCertificate(ca_certificate));
  Store store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  StoreCtx ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr);
  if (X509_verify_cert(ctx.get()) != 1)
    return absl::PermissionDeniedError(absl::StrCat(
        "certificate does not verify against the CA: ",
        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  return absl::OkStatus();
}

absl::StatusOr<std::string> CertificateCommonName(const std::string& certificate) {
  ASSIGN_OR_RETURN(Cert cert, ParseCertificate(certificate));
  char buffer[256];
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buffer,
                                          sizeof(buffer));
  if (n < 0) return absl::InvalidArgumentError("certificate has no common name");
  return std::string(buffer, n);
}

}  // namespace splitfed
