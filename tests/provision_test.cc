// The CA and the kits: what verifies, what does not, and what lands where.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "provision/certificates.h"
#include "provision/federation_kit.h"
#include "provision/revocation.h"

#include "tests/refusal.h"
#include "tests/test_files.h"

namespace splitfed {
namespace {

using test_refusal::Refused;
namespace fs = std::filesystem;

using test_files::ReadText;

TEST(Certificates, IssuedCertificateVerifiesOnlyAgainstItsCa) {
  const PemPair ca = *MakeCertificateAuthority("test CA", 30);
  const PemPair rogue_ca = *MakeCertificateAuthority("rogue CA", 30);
  CertificateRequest request;
  request.common_name = "hospital-a";
  request.organizational_unit = "site";
  const PemPair site = *IssueCertificate(ca, request);
  EXPECT_TRUE(VerifyCertificate(site.certificate, ca.certificate).ok());
  const absl::Status rogue = VerifyCertificate(site.certificate, rogue_ca.certificate);
  EXPECT_EQ(rogue.code(), absl::StatusCode::kPermissionDenied) << rogue;
  EXPECT_EQ(*CertificateCommonName(site.certificate), "hospital-a");
  EXPECT_NE(site.private_key.find("BEGIN PRIVATE KEY"), std::string::npos);
}

TEST(Certificates, ExpiredCertificateDoesNotVerify) {
  const PemPair ca = *MakeCertificateAuthority("test CA", 30);
  CertificateRequest request;
  request.common_name = "old-site";
  request.not_before_offset_days = -10;
  request.valid_days = 5;  // ended five days ago
  const PemPair expired = *IssueCertificate(ca, request);
  const absl::Status s = VerifyCertificate(expired.certificate, ca.certificate);
  EXPECT_TRUE(Refused(s, absl::StatusCode::kPermissionDenied));
  EXPECT_NE(s.message().find("expired"), std::string::npos) << s;
}

TEST(Certificates, GarbageIsAnError) {
  EXPECT_TRUE(Refused(CertificateCommonName("not a certificate"),
                      absl::StatusCode::kInvalidArgument, "not a PEM certificate"));
  EXPECT_TRUE(Refused(IssueCertificate({"junk", "junk"}, {}), absl::StatusCode::kInvalidArgument,
                      "needs a common name"));
}

TEST(Revocation, ListsGrowBySerialAndOnlyTheCaMayExtendThem) {
  const PemPair ca = *MakeCertificateAuthority("test CA", 30);
  const PemPair rogue_ca = *MakeCertificateAuthority("rogue CA", 30);
  CertificateRequest request;
  request.common_name = "a";
  const PemPair a = *IssueCertificate(ca, request);
  request.common_name = "b";
  const PemPair b = *IssueCertificate(ca, request);
  const PemPair a_again = *IssueCertificate(ca, request);  // a new serial

  const std::string empty = *EmptyRevocationList(ca);
  EXPECT_EQ(RevocationList::Parse(empty, ca.certificate)->size(), 0u);
  const std::string one = *RevokeCertificate(ca, empty, a.certificate);
  const std::string two = *RevokeCertificate(ca, one, b.certificate);
  const RevocationList list = *RevocationList::Parse(two, ca.certificate);
  EXPECT_EQ(list.size(), 2u);
  EXPECT_TRUE(*list.IsRevoked(a.certificate));
  EXPECT_TRUE(*list.IsRevoked(b.certificate));
  EXPECT_FALSE(*list.IsRevoked(a_again.certificate)) << "revocation is by serial, not by name";

  EXPECT_TRUE(Refused(RevokeCertificate(ca, two, a.certificate), absl::StatusCode::kAlreadyExists,
                      "is already revoked"));
  request.common_name = "a";
  const PemPair stranger = *IssueCertificate(rogue_ca, request);
  EXPECT_TRUE(Refused(RevokeCertificate(ca, two, stranger.certificate),
                      absl::StatusCode::kInvalidArgument, "not issued by the federation's CA"));
  // A list signed by another CA, or altered after signing, is not this CA's list.
  const std::string rogue_list = *EmptyRevocationList(rogue_ca);
  EXPECT_TRUE(Refused(RevocationList::Parse(rogue_list, ca.certificate),
                      absl::StatusCode::kPermissionDenied, "not issued by this CA"));
  EXPECT_TRUE(Refused(RevocationList::Parse("junk", ca.certificate),
                      absl::StatusCode::kInvalidArgument, "not a PEM revocation list"));
  EXPECT_TRUE(Refused(RevokeCertificate(ca, rogue_list, b.certificate),
                      absl::StatusCode::kPermissionDenied));
}

TEST(Revocation, TheCoordinatorsFileIsReadAgainWhenItChanges) {
  const fs::path dir = fs::temp_directory_path() / ("splitfed_crl_" + std::to_string(getpid()));
  fs::remove_all(dir);
  KitOptions o;
  o.out_dir = dir.string();
  o.sites = {"a", "b"};
  ASSERT_TRUE(ProvisionFederation(o).ok());
  const std::string ca = ReadText(dir / "ca/ca.crt");
  const std::string a = ReadText(dir / "sites/a/site.crt");
  const std::string b = ReadText(dir / "sites/b/site.crt");
  auto file = RevocationFile::Open(dir / "coordinator/revoked.crl", ca);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE(*(*file)->IsRevoked(a));

  const auto written = RevokeSite(o.out_dir, "a");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, (std::vector<std::string>{(dir / "ca/revoked.crl").string(),
                                                 (dir / "coordinator/revoked.crl").string()}));
  EXPECT_TRUE(*(*file)->IsRevoked(a)) << "a revocation takes effect without a restart";
  EXPECT_FALSE(*(*file)->IsRevoked(b));
  EXPECT_TRUE(
      Refused(RevokeSite(o.out_dir, "a"), absl::StatusCode::kAlreadyExists, "is already revoked"));
  EXPECT_TRUE(Refused(RevokeSite(o.out_dir, "zz"), absl::StatusCode::kNotFound, "sites/zz"));

  // A damaged replacement does not undo a revocation: the last good list stays in force.
  { std::ofstream(dir / "coordinator/revoked.crl", std::ios::trunc) << "damaged"; }
  EXPECT_TRUE(*(*file)->IsRevoked(a));
  fs::remove(dir / "coordinator/revoked.crl");
  EXPECT_TRUE(*(*file)->IsRevoked(a));
  EXPECT_TRUE(Refused(RevocationFile::Open(dir / "coordinator/revoked.crl", ca),
                      absl::StatusCode::kNotFound));
  fs::remove_all(dir);
}

TEST(SiteNames, AreValidated) {
  EXPECT_TRUE(ValidateSiteName("hospital-a").ok());
  EXPECT_TRUE(ValidateSiteName("site_01.eu").ok());
  for (const char* bad : {"", "Hospital", "-a", "a b", "admin", "coordinator", "a/b"})
    EXPECT_TRUE(Refused(ValidateSiteName(bad), absl::StatusCode::kInvalidArgument)) << bad;
}

class KitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = fs::temp_directory_path() /
           ("splitfed_kit_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(out_);
  }
  void TearDown() override { fs::remove_all(out_); }
  fs::path out_;
};

TEST_F(KitTest, LaysOutEveryKitAndKeepsTheCaKeyApart) {
  KitOptions o;
  o.out_dir = out_.string();
  o.sites = {"a", "b", "c"};
  o.coordinator_hosts = {"fed.example.org", "10.1.2.3"};
  ASSERT_TRUE(ProvisionFederation(o).ok());

  const std::string ca = ReadText(out_ / "ca/ca.crt");
  for (const fs::path& dir : {out_ / "coordinator", out_ / "sites/a", out_ / "sites/b",
                              out_ / "sites/c", out_ / "admin"}) {
    EXPECT_EQ(ReadText(dir / "ca.crt"), ca) << dir;
    EXPECT_FALSE(fs::exists(dir / "ca.key")) << "the CA key must stay in ca/";
  }
  // Every kit's certificate chains to the CA and carries the party's name.
  EXPECT_EQ(*CertificateCommonName(ReadText(out_ / "sites/b/site.crt")), "b");
  EXPECT_TRUE(VerifyCertificate(ReadText(out_ / "sites/b/site.crt"), ca).ok());
  EXPECT_EQ(*CertificateCommonName(ReadText(out_ / "admin/admin.crt")), "admin");
  EXPECT_TRUE(VerifyCertificate(ReadText(out_ / "coordinator/coordinator.crt"), ca).ok());
  // Private keys are readable by their owner only.
  for (const fs::path& key : {out_ / "ca/ca.key", out_ / "sites/a/site.key",
                              out_ / "coordinator/coordinator.key", out_ / "admin/admin.key"}) {
    struct stat st;
    ASSERT_EQ(stat(key.c_str(), &st), 0) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  // The coordinator's TOML enrols exactly the sites; each site's TOML points at loopback.
  const std::string coordinator = ReadText(out_ / "coordinator/coordinator.toml");
  EXPECT_NE(coordinator.find("enrolled_sites = [\"a\", \"b\", \"c\"]"), std::string::npos);
  EXPECT_NE(coordinator.find("listen = \"127.0.0.1:50051\""), std::string::npos);
  EXPECT_NE(ReadText(out_ / "sites/c/site.toml").find("coordinator = \"127.0.0.1:50051\""),
            std::string::npos);
}

TEST_F(KitTest, RefusesBadInputAndANonEmptyFolder) {
  KitOptions o;
  o.out_dir = out_.string();
  o.sites = {"a", "a"};
  EXPECT_NE(ProvisionFederation(o).message().find("listed twice"), std::string::npos);
  o.sites = {"Bad Name"};
  EXPECT_TRUE(Refused(ProvisionFederation(o), absl::StatusCode::kInvalidArgument));
  o.sites = {};
  EXPECT_TRUE(Refused(ProvisionFederation(o), absl::StatusCode::kInvalidArgument, "names no site"));
  o.sites = {"a"};
  ASSERT_TRUE(ProvisionFederation(o).ok());
  const std::string first_ca = ReadText(out_ / "ca/ca.crt");
  const absl::Status again = ProvisionFederation(o);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(ReadText(out_ / "ca/ca.crt"), first_ca) << "nothing was overwritten";
  o.overwrite = true;
  EXPECT_TRUE(ProvisionFederation(o).ok());
  EXPECT_NE(ReadText(out_ / "ca/ca.crt"), first_ca);
}

}  // namespace
}  // namespace splitfed
