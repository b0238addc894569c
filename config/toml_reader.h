// The one way the project reads its TOML files (coordinator.toml, site.toml, admin.toml and
// experiment files): typed getters that leave a default in place when a key is absent, ranges
// checked where they are read, relative paths resolved against the file's folder, and any
// key nobody asked for refused with its full name.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace splitfed::config {

// One table of a document. Every getter marks its key as known; call RejectUnknown() after
// the last one. Errors read "SOURCE: table.key: what is wrong".
class TomlTable {
 public:
  // `table` may be null: a table the file leaves out, whose getters keep every default.
  TomlTable(const toml::table* table, std::string source, std::string prefix, std::string folder);

  std::string Key(const std::string& key) const;  // the key's full name, for messages
  bool Has(const std::string& key) const;
  absl::Status Error(const std::string& key, const std::string& what) const;

  absl::Status String(const std::string& key, std::string* out);
  // A path; a relative one is made absolute against the file's folder, so that a copy of
  // the values written elsewhere still points at the same files.
  absl::Status Path(const std::string& key, std::string* out);
  absl::Status Int(const std::string& key, int64_t* out, int64_t lo, int64_t hi);
  absl::Status Double(const std::string& key, double* out, double lo, double hi);
  absl::Status Bool(const std::string& key, bool* out);
  absl::Status Strings(const std::string& key, std::vector<std::string>* out);
  absl::Status Paths(const std::string& key, std::vector<std::string>* out);
  absl::Status Seeds(const std::string& key, std::vector<uint64_t>* out);  // non-empty, >= 0
  // One of `choices`; the message lists them.
  absl::Status Choice(const std::string& key, const std::vector<std::string>& choices,
                      std::string* out);

  // The sub-table [key]; an absent one reads as empty.
  absl::StatusOr<TomlTable> Table(const std::string& key);
  // The tables [[key]], in file order (key[0], key[1], ... in messages).
  absl::StatusOr<std::vector<TomlTable>> Tables(const std::string& key);

  // Anything the table holds that no getter asked for is a typo: an error that names it.
  absl::Status RejectUnknown() const;

 private:
  const toml::node* Node(const std::string& key);
  std::string Absolute(const std::string& path) const;

  const toml::table* table_;
  std::string source_;
  std::string prefix_;
  std::string folder_;
  std::set<std::string> known_;
};

// A parsed file; its tables stay valid while the document lives.
class TomlDocument {
 public:
  static absl::StatusOr<TomlDocument> ReadFile(const std::string& path);
  // `source` names the text in messages; relative paths resolve against `folder`.
  static absl::StatusOr<TomlDocument> Parse(const std::string& text, const std::string& source,
                                            const std::string& folder);
  TomlTable Root() const;

 private:
  std::shared_ptr<const toml::table> root_;
  std::string source_;
  std::string folder_;
};

}  // namespace splitfed::config
