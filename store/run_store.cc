#include "store/run_store.h"

#include <sqlite3.h>

#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

constexpr const char* kSchema = R"sql(
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;  -- with WAL: consistent after a crash, no fsync per commit
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'running',
  config_json TEXT NOT NULL DEFAULT '{}',
  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  finished_at TEXT,
  resumed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rounds (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 1,
  checkpoint_path TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  finished_at TEXT,
  resume_path TEXT NOT NULL DEFAULT '',
  resume_sha256 TEXT NOT NULL DEFAULT '',
  resume_json TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run_id, round)
);
CREATE TABLE IF NOT EXISTS sites (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  name TEXT NOT NULL,
  connected INTEGER NOT NULL DEFAULT 0,
  images INTEGER NOT NULL DEFAULT 0,
  first_seen TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  last_seen TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS site_round_metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  site TEXT NOT NULL,
  included INTEGER NOT NULL,
  train_loss REAL,
  validation_dice REAL,
  validation_loss REAL,
  reliability REAL,
  aggregation_weight REAL,
  bytes_in INTEGER NOT NULL DEFAULT 0,
  bytes_out INTEGER NOT NULL DEFAULT 0,
  note TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run_id, round, site)
);
)sql";

// A prepared statement that finalises itself; Bind* take 1-based positions.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    status_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return status_ == SQLITE_OK; }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, const std::optional<double>& v) {
    if (v) {
      sqlite3_bind_double(stmt_, i, *v);
    } else {
      sqlite3_bind_null(stmt_, i);
    }
  }
  int Step() { return sqlite3_step(stmt_); }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  std::optional<double> Real(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_double(stmt_, col);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int status_;
};

absl::Status SqlError(sqlite3* db, const std::string& what) {
  return absl::InternalError(absl::StrCat("run store: ", what, ": ", sqlite3_errmsg(db)));
}

// Runs a statement that returns no rows.
absl::Status Run(sqlite3* db, Statement& stmt, const std::string& what) {
  if (!stmt.ok()) return SqlError(db, what);
  if (stmt.Step() != SQLITE_DONE) return SqlError(db, what);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunStore>> RunStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat(path, ": cannot open the run store: ", message));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<RunStore> store(new RunStore(db, path));
  if (auto s = store->Exec(kSchema); !s.ok())
    return absl::DataLossError(absl::StrCat(path, ": not a usable run store (", s.message(), ")"));
  if (auto s = store->AddMissingColumns(); !s.ok())
    return absl::DataLossError(absl::StrCat(path, ": cannot upgrade the run store (", s.message(), ")"));
  return store;
}

RunStore::RunStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
RunStore::~RunStore() { sqlite3_close(db_); }

// Stores written by earlier versions lack the columns added since; SQLite adds them in place
// (their default, or NULL, for the rows already there).
absl::Status RunStore::AddMissingColumns() {
  struct Column {
    const char* table;
    const char* name;
    const char* definition;
  };
  static const Column kAdded[] = {
      {"site_round_metrics", "validation_loss", "REAL"},
      {"runs", "resumed", "INTEGER NOT NULL DEFAULT 0"},
      {"rounds", "resume_path", "TEXT NOT NULL DEFAULT ''"},
      {"rounds", "resume_sha256", "TEXT NOT NULL DEFAULT ''"},
      {"rounds", "resume_json", "TEXT NOT NULL DEFAULT ''"},
  };
  for (const Column& c : kAdded) {
    Statement stmt(db_, "SELECT 1 FROM pragma_table_info(?) WHERE name = ?");
    if (!stmt.ok()) return SqlError(db_, "reading the schema");
    stmt.Bind(1, std::string(c.table));
    stmt.Bind(2, std::string(c.name));
    if (stmt.Step() == SQLITE_ROW) continue;
    RETURN_IF_ERROR(Exec(absl::StrCat("ALTER TABLE ", c.table, " ADD COLUMN ", c.name, " ",
                                      c.definition)));
  }
  return absl::OkStatus();
}

absl::Status RunStore::Exec(const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return absl::InternalError(message);
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RunStore::CreateRun(const std::string& name,
                                            const std::string& config_json) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_, "INSERT INTO runs (name, config_json) VALUES (?, ?)");
  stmt.Bind(1, name);
  stmt.Bind(2, config_json);
  RETURN_IF_ERROR(Run(db_, stmt, "creating a run"));
  return sqlite3_last_insert_rowid(db_);
}

absl::Status RunStore::FinishRun(int64_t run_id, const std::string& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "UPDATE runs SET status = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                 "WHERE id = ?");
  stmt.Bind(1, status);
  stmt.Bind(2, run_id);
  return Run(db_, stmt, "finishing a run");
}

absl::StatusOr<std::optional<RunRecord>> RunStore::LatestRun(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "SELECT id, name, status, config_json, started_at, IFNULL(finished_at, ''), "
                 "resumed FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1");
  if (!stmt.ok()) return SqlError(db_, "finding a run");
  stmt.Bind(1, name);
  if (stmt.Step() != SQLITE_ROW) return std::optional<RunRecord>();
  return RunRecord{stmt.Int(0),  stmt.Text(1), stmt.Text(2), stmt.Text(3),
                   stmt.Text(4), stmt.Text(5), stmt.Int(6)};
}

absl::Status RunStore::ResumeRun(int64_t run_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "UPDATE runs SET status = 'running', finished_at = NULL, resumed = resumed + 1 "
                 "WHERE id = ?");
  stmt.Bind(1, run_id);
  RETURN_IF_ERROR(Run(db_, stmt, "resuming a run"));
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(absl::StrCat("run store: no run ", run_id, " to resume"));
  return absl::OkStatus();
}

absl::Status RunStore::StartRound(int64_t run_id, int64_t round) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "INSERT INTO rounds (run_id, round, state) VALUES (?, ?, 'training') "
                 "ON CONFLICT (run_id, round) DO UPDATE SET state = 'training', "
                 "attempt = attempt + 1, finished_at = NULL, "
                 "started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
  stmt.Bind(1, run_id);
  stmt.Bind(2, round);
  return Run(db_, stmt, "starting a round");
}

absl::Status RunStore::FinishRound(int64_t run_id, int64_t round, const std::string& state,
                                   const std::string& checkpoint_path) {
  std::lock_guard<std::mutex> lock(mutex_);
  RoundClosing closing;
  closing.run_id = run_id;
  closing.round = round;
  closing.state = state;
  closing.checkpoint_path = checkpoint_path;
  return FinishRoundLocked(closing);
}

absl::Status RunStore::FinishRoundLocked(const RoundClosing& c) {
  Statement stmt(db_,
                 "UPDATE rounds SET state = ?, checkpoint_path = ?, resume_path = ?, "
                 "resume_sha256 = ?, resume_json = ?, "
                 "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                 "WHERE run_id = ? AND round = ?");
  stmt.Bind(1, c.state);
  stmt.Bind(2, c.checkpoint_path);
  stmt.Bind(3, c.resume_path);
  stmt.Bind(4, c.resume_sha256);
  stmt.Bind(5, c.resume_json);
  stmt.Bind(6, c.run_id);
  stmt.Bind(7, c.round);
  RETURN_IF_ERROR(Run(db_, stmt, "finishing a round"));
  if (sqlite3_changes(db_) == 0)
    return absl::NotFoundError(
        absl::StrCat("run store: run ", c.run_id, " has no round ", c.round, " to finish"));
  return absl::OkStatus();
}

absl::Status RunStore::CloseRound(const RoundClosing& closing) {
  std::lock_guard<std::mutex> lock(mutex_);
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = absl::OkStatus();
  for (const SiteRoundMetrics& m : closing.sites) {
    s = RecordSiteMetricsLocked(m);
    if (!s.ok()) break;
  }
  if (s.ok()) s = FinishRoundLocked(closing);
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) {
    Exec("ROLLBACK").IgnoreError();  // nothing of the round is kept
    return s;
  }
  return absl::OkStatus();
}

absl::Status RunStore::TouchSite(int64_t run_id, const std::string& site, int64_t images,
                                 bool connected) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "INSERT INTO sites (run_id, name, connected, images) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (run_id, name) DO UPDATE SET connected = excluded.connected, "
                 "images = excluded.images, "
                 "last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
  stmt.Bind(1, run_id);
  stmt.Bind(2, site);
  stmt.Bind(3, int64_t{connected});
  stmt.Bind(4, images);
  return Run(db_, stmt, "recording a site");
}

absl::Status RunStore::RecordSiteMetrics(const SiteRoundMetrics& m) {
  std::lock_guard<std::mutex> lock(mutex_);
  return RecordSiteMetricsLocked(m);
}

absl::Status RunStore::RecordSiteMetricsLocked(const SiteRoundMetrics& m) {
  Statement stmt(db_,
                 "INSERT OR REPLACE INTO site_round_metrics (run_id, round, site, included, "
                 "train_loss, validation_dice, reliability, aggregation_weight, bytes_in, "
                 "bytes_out, note, validation_loss) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  stmt.Bind(1, m.run_id);
  stmt.Bind(2, m.round);
  stmt.Bind(3, m.site);
  stmt.Bind(4, int64_t{m.included});
  stmt.Bind(5, m.train_loss);
  stmt.Bind(6, m.validation_dice);
  stmt.Bind(7, m.reliability);
  stmt.Bind(8, m.aggregation_weight);
  stmt.Bind(9, m.bytes_in);
  stmt.Bind(10, m.bytes_out);
  stmt.Bind(11, m.note);
  stmt.Bind(12, m.validation_loss);
  return Run(db_, stmt, "recording site metrics");
}

absl::StatusOr<std::vector<RunRecord>> RunStore::Runs() {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "SELECT id, name, status, config_json, started_at, IFNULL(finished_at, ''), "
                 "resumed FROM runs ORDER BY id");
  if (!stmt.ok()) return SqlError(db_, "listing runs");
  std::vector<RunRecord> out;
  while (stmt.Step() == SQLITE_ROW)
    out.push_back({stmt.Int(0), stmt.Text(1), stmt.Text(2), stmt.Text(3), stmt.Text(4),
                   stmt.Text(5), stmt.Int(6)});
  return out;
}

absl::StatusOr<std::vector<RoundRecord>> RunStore::Rounds(int64_t run_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "SELECT run_id, round, state, attempt, checkpoint_path, started_at, "
                 "IFNULL(finished_at, ''), resume_path, resume_sha256, resume_json "
                 "FROM rounds WHERE run_id = ? ORDER BY round");
  if (!stmt.ok()) return SqlError(db_, "listing rounds");
  stmt.Bind(1, run_id);
  std::vector<RoundRecord> out;
  while (stmt.Step() == SQLITE_ROW)
    out.push_back({stmt.Int(0), stmt.Int(1), stmt.Text(2), stmt.Int(3), stmt.Text(4),
                   stmt.Text(5), stmt.Text(6), stmt.Text(7), stmt.Text(8), stmt.Text(9)});
  return out;
}

absl::StatusOr<std::vector<SiteRecord>> RunStore::Sites(int64_t run_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "SELECT run_id, name, connected, images, first_seen, last_seen FROM sites "
                 "WHERE run_id = ? ORDER BY name");
  if (!stmt.ok()) return SqlError(db_, "listing sites");
  stmt.Bind(1, run_id);
  std::vector<SiteRecord> out;
  while (stmt.Step() == SQLITE_ROW)
    out.push_back({stmt.Int(0), stmt.Text(1), stmt.Int(2) != 0, stmt.Int(3), stmt.Text(4),
                   stmt.Text(5)});
  return out;
}

absl::StatusOr<std::vector<SiteRoundMetrics>> RunStore::Metrics(int64_t run_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Statement stmt(db_,
                 "SELECT run_id, round, site, included, train_loss, validation_dice, "
                 "reliability, aggregation_weight, bytes_in, bytes_out, note, validation_loss "
                 "FROM site_round_metrics WHERE run_id = ? ORDER BY round, site");
  if (!stmt.ok()) return SqlError(db_, "listing metrics");
  stmt.Bind(1, run_id);
  std::vector<SiteRoundMetrics> out;
  while (stmt.Step() == SQLITE_ROW) {
    SiteRoundMetrics m;
    m.run_id = stmt.Int(0);
    m.round = stmt.Int(1);
    m.site = stmt.Text(2);
    m.included = stmt.Int(3) != 0;
    m.train_loss = stmt.Real(4);
    m.validation_dice = stmt.Real(5);
    m.reliability = stmt.Real(6);
    m.aggregation_weight = stmt.Real(7);
    m.bytes_in = stmt.Int(8);
    m.bytes_out = stmt.Int(9);
    m.note = stmt.Text(10);
    m.validation_loss = stmt.Real(11);
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<double> SecondsBetween(const std::string& from, const std::string& to) {
  auto seconds = [](const std::string& text) -> absl::StatusOr<double> {
    std::tm tm{};
    double second = 0;
    char zone = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%c", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &second, &zone) != 7 ||
        zone != 'Z')
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a store timestamp"));
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<double>(timegm(&tm)) + second;
  };
  ASSIGN_OR_RETURN(const double a, seconds(from));
  ASSIGN_OR_RETURN(const double b, seconds(to));
  return b - a;
}

}  // namespace splitfed
