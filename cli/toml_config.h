// Reading the TOML files `splitfed provision` writes: every key is checked, unknown keys are
// errors that name the key, and relative paths resolve against the file's folder.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace splitfed::cli {

// Flat view of a TOML file: "key" or "table.key" → value. Strings keep their text; numbers
// and booleans are printed; arrays of strings are joined with ','.
struct TomlValues {
  std::string path;
  std::string folder;  // for relative paths
  std::map<std::string, std::string> values;

  bool Has(const std::string& key) const { return values.count(key) > 0; }
  std::string String(const std::string& key, const std::string& fallback = "") const;
  // A path: relative ones are taken from the file's folder.
  std::string Path(const std::string& key, const std::string& fallback = "") const;
  absl::StatusOr<int64_t> Int(const std::string& key, int64_t fallback) const;
  absl::StatusOr<double> Double(const std::string& key, double fallback) const;
  std::vector<std::string> List(const std::string& key) const;
};

// Parses `path`, refusing keys outside `allowed` (e.g. "listen", "tls.certificate").
absl::StatusOr<TomlValues> ReadToml(const std::string& path, const std::set<std::string>& allowed);

}  // namespace splitfed::cli
