// The run store on a real SQLite file: what is written is read back, also after reopening.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <sqlite3.h>

#include "store/run_store.h"
#include "tests/refusal.h"

namespace splitfed {
namespace {

using test_refusal::Refused;
namespace fs = std::filesystem;

class RunStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::temp_directory_path() /
            ("splitfed_store_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    Cleanup();
  }
  void TearDown() override { Cleanup(); }
  void Cleanup() {
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path_.string() + suffix);
  }
  fs::path path_;
};

TEST_F(RunStoreTest, RoundsSitesAndMetricsSurviveReopening) {
  int64_t run = 0;
  {
    auto store = *RunStore::Open(path_.string());
    run = *store->CreateRun("phantoms-3", R"({"rounds": 2})");
    ASSERT_TRUE(store->TouchSite(run, "a", 40, true).ok());
    ASSERT_TRUE(store->TouchSite(run, "b", 60, true).ok());
    ASSERT_TRUE(store->StartRound(run, 1).ok());
    SiteRoundMetrics m;
    m.run_id = run;
    m.round = 1;
    m.site = "a";
    m.train_loss = 0.5;
    m.validation_dice = 0.81;
    m.validation_loss = 0.47;
    m.aggregation_weight = 0.4;
    m.bytes_in = 1000;
    m.bytes_out = 2000;
    ASSERT_TRUE(store->RecordSiteMetrics(m).ok());
    SiteRoundMetrics left_out;
    left_out.run_id = run;
    left_out.round = 1;
    left_out.site = "b";
    left_out.included = false;
    left_out.note = "deadline passed";
    ASSERT_TRUE(store->RecordSiteMetrics(left_out).ok());
    ASSERT_TRUE(store->FinishRound(run, 1, "completed", "/ckpt/round-1.pt").ok());
    ASSERT_TRUE(store->TouchSite(run, "b", 60, false).ok());
    ASSERT_TRUE(store->FinishRun(run, "finished").ok());
  }
  auto store = *RunStore::Open(path_.string());
  const auto runs = *store->Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].name, "phantoms-3");
  EXPECT_EQ(runs[0].status, "finished");
  EXPECT_EQ(runs[0].config_json, R"({"rounds": 2})");
  EXPECT_FALSE(runs[0].finished_at.empty());

  const auto rounds = *store->Rounds(run);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].state, "completed");
  EXPECT_EQ(rounds[0].checkpoint_path, "/ckpt/round-1.pt");

  const auto sites = *store->Sites(run);
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_EQ(sites[0].name, "a");
  EXPECT_TRUE(sites[0].connected);
  EXPECT_EQ(sites[1].images, 60);
  EXPECT_FALSE(sites[1].connected);

  const auto metrics = *store->Metrics(run);
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_DOUBLE_EQ(*metrics[0].validation_dice, 0.81);
  EXPECT_DOUBLE_EQ(*metrics[0].validation_loss, 0.47);
  EXPECT_FALSE(metrics[1].validation_loss.has_value());
  EXPECT_DOUBLE_EQ(*metrics[0].aggregation_weight, 0.4);
  EXPECT_FALSE(metrics[0].reliability.has_value()) << "unset values stay NULL";
  EXPECT_EQ(metrics[0].bytes_out, 2000);
  EXPECT_FALSE(metrics[1].included);
  EXPECT_EQ(metrics[1].note, "deadline passed");
}

TEST_F(RunStoreTest, ARetriedRoundCountsItsAttempts) {
  auto store = *RunStore::Open(path_.string());
  const int64_t run = *store->CreateRun("r", "{}");
  ASSERT_TRUE(store->StartRound(run, 3).ok());
  ASSERT_TRUE(store->FinishRound(run, 3, "retried", "").ok());
  ASSERT_TRUE(store->StartRound(run, 3).ok());
  const auto rounds = *store->Rounds(run);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].attempt, 2);
  EXPECT_EQ(rounds[0].state, "training");
  EXPECT_TRUE(rounds[0].finished_at.empty());
  EXPECT_EQ(store->FinishRound(run, 4, "completed", "").code(), absl::StatusCode::kNotFound);
}

// Closing a round writes its metrics, state and resume point together, or none of them.
TEST_F(RunStoreTest, ClosingARoundIsAllOrNothing) {
  auto store = *RunStore::Open(path_.string());
  const int64_t run = *store->CreateRun("r", "{}");
  RoundClosing closing;
  closing.run_id = run;
  closing.round = 1;
  closing.state = "completed";
  closing.resume_path = "/ckpt/resume/round-1.state";
  closing.resume_sha256 = "ab12";
  closing.resume_json = "{}";
  SiteRoundMetrics m;
  m.run_id = run;
  m.round = 1;
  m.site = "a";
  closing.sites = {m};
  // Round 1 never started: the round's row is missing, so its metrics must not stay either.
  EXPECT_EQ(store->CloseRound(closing).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Metrics(run)->empty());
  ASSERT_TRUE(store->StartRound(run, 1).ok());
  ASSERT_TRUE(store->CloseRound(closing).ok());
  EXPECT_EQ(store->Metrics(run)->size(), 1u);
  const auto rounds = *store->Rounds(run);
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].state, "completed");
  EXPECT_EQ(rounds[0].resume_path, "/ckpt/resume/round-1.state");
  EXPECT_EQ(rounds[0].resume_sha256, "ab12");
  ASSERT_TRUE(store->ResumeRun(run).ok());
  ASSERT_TRUE(store->ResumeRun(run).ok());
  EXPECT_EQ((*store->LatestRun("r"))->resumed, 2);
  EXPECT_FALSE(store->LatestRun("nobody")->has_value());
}

// A store written before site_round_metrics had validation_loss is upgraded in place: its
// rows stay, with the new column NULL, and new rows carry the value.
TEST_F(RunStoreTest, AnOlderStoreGainsTheValidationLossColumn) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const char* old_schema =
        "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "status TEXT NOT NULL DEFAULT 'running', config_json TEXT NOT NULL DEFAULT '{}', "
        "started_at TEXT NOT NULL DEFAULT '', finished_at TEXT);"
        "CREATE TABLE site_round_metrics (run_id INTEGER NOT NULL, round INTEGER NOT NULL, "
        "site TEXT NOT NULL, included INTEGER NOT NULL, train_loss REAL, validation_dice REAL, "
        "reliability REAL, aggregation_weight REAL, bytes_in INTEGER NOT NULL DEFAULT 0, "
        "bytes_out INTEGER NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '', "
        "PRIMARY KEY (run_id, round, site));"
        "INSERT INTO runs (name) VALUES ('old');"
        "INSERT INTO site_round_metrics (run_id, round, site, included, validation_dice) "
        "VALUES (1, 1, 'a', 1, 0.5);";
    ASSERT_EQ(sqlite3_exec(db, old_schema, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = RunStore::Open(path_.string());
  ASSERT_TRUE(store.ok()) << store.status();
  SiteRoundMetrics m;
  m.run_id = 1;
  m.round = 2;
  m.site = "a";
  m.validation_loss = 0.25;
  ASSERT_TRUE((*store)->RecordSiteMetrics(m).ok());
  const auto metrics = *(*store)->Metrics(1);
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_DOUBLE_EQ(*metrics[0].validation_dice, 0.5);
  EXPECT_FALSE(metrics[0].validation_loss.has_value());
  EXPECT_DOUBLE_EQ(*metrics[1].validation_loss, 0.25);
}

TEST_F(RunStoreTest, ACorruptFileIsAClearError) {
  std::ofstream(path_) << std::string(4096, 'x');
  const auto store = RunStore::Open(path_.string());
  ASSERT_TRUE(Refused(store, absl::StatusCode::kDataLoss));
  EXPECT_NE(store.status().message().find("not a usable run store"), std::string::npos)
      << store.status();
  const auto nowhere = RunStore::Open("/nonexistent-dir/x.db");
  EXPECT_TRUE(Refused(nowhere, absl::StatusCode::kUnavailable, "cannot open the run store"));
}

TEST(StoreTimestamps, SecondsBetweenReadsTheStoresOwnFormat) {
  EXPECT_DOUBLE_EQ(*SecondsBetween("2026-12-07T12:00:01.250Z", "2026-12-07T12:00:03.000Z"), 1.75);
  EXPECT_DOUBLE_EQ(*SecondsBetween("2026-12-31T23:59:59.500Z", "2027-01-01T00:00:00.500Z"), 1.0);
  EXPECT_TRUE(Refused(SecondsBetween("yesterday", "2026-12-07T12:00:01.250Z"),
                      absl::StatusCode::kInvalidArgument, "'yesterday' is not a store timestamp"));
  EXPECT_TRUE(Refused(SecondsBetween("2026-12-07T12:00:01.250Z", ""),
                      absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace splitfed
