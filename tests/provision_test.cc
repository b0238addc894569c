// The CA and the kits: what verifies, what does not, and what lands where.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "provision/certificates.h"
#include "provision/federation_kit.h"

#include "tests/test_files.h"
namespace splitfed {
namespace {
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
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expired"), std::string::npos) << s;
}

TEST(Certificates, GarbageIsAnError) {
  EXPECT_FALSE(CertificateCommonName("not a certificate").ok());
  EXPECT_FALSE(IssueCertificate({"junk", "junk"}, {}).ok());
}

TEST(SiteNames, AreValidated) {
  EXPECT_TRUE(ValidateSiteName("hospital-a").ok());
  EXPECT_TRUE(ValidateSiteName("site_01.eu").ok());
  for (const char* bad : {"", "Hospital", "-a", "a b", "admin", "coordinator", "a/b"})
    EXPECT_FALSE(ValidateSiteName(bad).ok()) << bad;
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
  EXPECT_FALSE(ProvisionFederation(o).ok());
  o.sites = {};
  EXPECT_FALSE(ProvisionFederation(o).ok());
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
