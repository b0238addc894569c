// The one TOML reader (config/toml_reader.h) and the one [method] schema
// (config/method_table.h) that coordinator.toml and experiment files share.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "config/method_table.h"
#include "config/toml_reader.h"

namespace splitfed::config {
namespace {

TomlDocument Parse(const std::string& text, const std::string& folder = "/kit") {
  absl::StatusOr<TomlDocument> doc = TomlDocument::Parse(text, "test.toml", folder);
  EXPECT_TRUE(doc.ok()) << doc.status();
  return *doc;
}

TEST(TomlReader, AbsentKeysKeepTheirDefaultsAndPresentOnesAreRead) {
  const TomlDocument doc = Parse("rounds = 7\nname = \"x\"\n[run]\nrate = 0.5\nfast = true\n");
  TomlTable top = doc.Root();
  int64_t rounds = 1, missing = 42;
  std::string name = "default";
  ASSERT_TRUE(top.Int("rounds", &rounds, 1, 100).ok());
  ASSERT_TRUE(top.Int("missing", &missing, 1, 100).ok());
  ASSERT_TRUE(top.String("name", &name).ok());
  absl::StatusOr<TomlTable> run = top.Table("run");
  ASSERT_TRUE(run.ok()) << run.status();
  double rate = 0;
  bool fast = false;
  ASSERT_TRUE(run->Double("rate", &rate, 0, 1).ok());
  ASSERT_TRUE(run->Bool("fast", &fast).ok());
  EXPECT_EQ(rounds, 7);
  EXPECT_EQ(missing, 42);
  EXPECT_EQ(name, "x");
  EXPECT_DOUBLE_EQ(rate, 0.5);
  EXPECT_TRUE(fast);
  EXPECT_TRUE(run->RejectUnknown().ok());
  EXPECT_TRUE(top.RejectUnknown().ok());
}

TEST(TomlReader, ErrorsNameTheFileAndTheFullKey) {
  const TomlDocument doc = Parse("[run]\nrounds = 0\nrate = \"fast\"\nrouns = 3\nmode = \"x\"\n");
  TomlTable run = *doc.Root().Table("run");
  int64_t rounds = 1;
  double rate = 0;
  std::string mode = "a";
  EXPECT_EQ(run.Int("rounds", &rounds, 1, 10).message(),
            "test.toml: run.rounds: must be in [1, 10], got 0");
  EXPECT_EQ(rounds, 1) << "a refused value is not stored";
  EXPECT_EQ(run.Double("rate", &rate, 0, 1).message(), "test.toml: run.rate: must be a number");
  EXPECT_EQ(run.Choice("mode", {"a", "b", "c"}, &mode).message(),
            "test.toml: run.mode: must be a, b or c, got 'x'");
  const absl::Status unknown = run.RejectUnknown();
  EXPECT_TRUE(absl::IsInvalidArgument(unknown));
  EXPECT_NE(unknown.message().find("test.toml: run.rouns: unknown key"), std::string::npos)
      << unknown;
}

TEST(TomlReader, AKeyThatShouldBeATableIsRefused) {
  const TomlDocument doc = Parse("run = 3\n");
  TomlTable top = doc.Root();
  EXPECT_EQ(top.Table("run").status().message(), "test.toml: run: must be a table [run]");
}

TEST(TomlReader, ListsOfTablesAreNumberedInMessages) {
  const TomlDocument doc = Parse("[[noise]]\nname = \"a\"\n[[noise]]\nname = 3\n");
  TomlTable top = doc.Root();
  absl::StatusOr<std::vector<TomlTable>> noise = top.Tables("noise");
  ASSERT_TRUE(noise.ok()) << noise.status();
  ASSERT_EQ(noise->size(), 2u);
  std::string name;
  EXPECT_TRUE((*noise)[0].String("name", &name).ok());
  EXPECT_EQ(name, "a");
  EXPECT_EQ((*noise)[1].String("name", &name).message(),
            "test.toml: noise[1].name: must be a string");
}

TEST(TomlReader, RelativePathsResolveAgainstTheFilesFolder) {
  const TomlDocument doc = Parse("db = \"run/store.db\"\nca = \"/etc/ca.crt\"\nroots = [\"a\", \"../b\"]\n",
                                 "/kit/coordinator");
  TomlTable top = doc.Root();
  std::string db, ca, fallback = "checkpoints";
  std::vector<std::string> roots;
  ASSERT_TRUE(top.Path("db", &db).ok());
  ASSERT_TRUE(top.Path("ca", &ca).ok());
  ASSERT_TRUE(top.Path("absent", &fallback).ok());
  ASSERT_TRUE(top.Paths("roots", &roots).ok());
  EXPECT_EQ(db, "/kit/coordinator/run/store.db");
  EXPECT_EQ(ca, "/etc/ca.crt");
  EXPECT_EQ(fallback, "/kit/coordinator/checkpoints") << "a default is relative to the file too";
  EXPECT_EQ(roots, (std::vector<std::string>{"/kit/coordinator/a", "/kit/b"}));
}

TEST(TomlReader, SyntaxErrorsGiveTheLine) {
  absl::StatusOr<TomlDocument> doc = TomlDocument::Parse("a = 1\nb = = 2\n", "bad.toml", "/");
  ASSERT_FALSE(doc.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(doc.status()));
  EXPECT_EQ(doc.status().message().rfind("bad.toml:2: ", 0), 0u) << doc.status();
}

TEST(TomlReader, AMissingFileIsNotFound) {
  const absl::StatusOr<TomlDocument> doc = TomlDocument::ReadFile("/nonexistent/site.toml");
  EXPECT_TRUE(absl::IsNotFound(doc.status())) << doc.status();
}

TEST(MethodTable, EveryKeyIsRead) {
  const TomlDocument doc = Parse(R"([method]
warmup_rounds = 9
warmup_patience = 2
teacher_beta = 0.5
ramp_rounds = 4
tau_min = 0.6
min_gap = 0.2
separation = 3.5
detection = "relative"
threshold = "fixed"
kappa = 0.7
refinement = "hard"
consistency = false
loss_weights = "fixed"
distillation_weight = 0.3
)");
  TomlTable m = *doc.Root().Table("method");
  MethodOptions o;
  ASSERT_TRUE(ReadMethodTable(m, &o).ok());
  EXPECT_TRUE(m.RejectUnknown().ok()) << "every key above belongs to the schema";
  EXPECT_EQ(o.warmup_rounds, 9);
  EXPECT_EQ(o.warmup_patience, 2);
  EXPECT_DOUBLE_EQ(o.teacher_beta, 0.5);
  EXPECT_EQ(o.ramp_rounds, 4);
  EXPECT_DOUBLE_EQ(o.threshold.tau_min, 0.6);
  EXPECT_DOUBLE_EQ(o.threshold.min_gap, 0.2);
  EXPECT_DOUBLE_EQ(o.threshold.separation, 3.5);
  EXPECT_EQ(o.threshold.detection, colearning::DetectionMode::kRelative);
  EXPECT_TRUE(o.threshold.fixed_tau);
  EXPECT_DOUBLE_EQ(o.kappa, 0.7);
  EXPECT_EQ(o.refinement, RefinementMode::kHard);
  EXPECT_FALSE(o.consistency);
  EXPECT_FALSE(o.learned_loss_weights);
  EXPECT_DOUBLE_EQ(o.distillation_weight, 0.3);
}

TEST(MethodTable, AnEmptyTableKeepsTheGivenOptions) {
  const TomlDocument doc = Parse("");
  TomlTable m = *doc.Root().Table("method");
  MethodOptions given;
  given.warmup_rounds = 15;
  given.refinement = RefinementMode::kOff;
  MethodOptions o = given;
  ASSERT_TRUE(ReadMethodTable(m, &o).ok());
  EXPECT_EQ(o.warmup_rounds, 15);
  EXPECT_EQ(o.refinement, RefinementMode::kOff);
  EXPECT_EQ(o.kind, given.kind);
}

TEST(MethodTable, BadValuesNameTheKey) {
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"refinement = \"sharp\"", "method.refinement: must be soft, hard or off, got 'sharp'"},
           {"detection = 1", "method.detection: must be a string"},
           {"kappa = 0", "method.kappa: must be in [0.01, 1], got 0"},
           {"consistency = \"yes\"", "method.consistency: must be true or false"}}) {
    const TomlDocument doc = Parse("[method]\n" + text + "\n");
    TomlTable m = *doc.Root().Table("method");
    MethodOptions o;
    const absl::Status s = ReadMethodTable(m, &o);
    EXPECT_EQ(s.message(), "test.toml: " + message) << text;
  }
}

}  // namespace
}  // namespace splitfed::config
