#include "cli/toml_config.h"

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "status/status_macros.h"

namespace splitfed::cli {
namespace fs = std::filesystem;
namespace {

absl::Status Flatten(const toml::table& table, const std::string& prefix, const std::string& path,
                     const std::set<std::string>& allowed, TomlValues* out) {
  for (const auto& [key, node] : table) {
    const std::string name = prefix.empty() ? std::string(key.str())
                                            : absl::StrCat(prefix, ".", std::string(key.str()));
    if (const toml::table* sub = node.as_table()) {
      RETURN_IF_ERROR(Flatten(*sub, name, path, allowed, out));
      continue;
    }
    if (!allowed.count(name))
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": unknown key '", name, "' (known keys: ", absl::StrJoin(allowed, ", "), ")"));
    if (const toml::array* arr = node.as_array()) {
      std::vector<std::string> items;
      for (const auto& item : *arr) {
        if (!item.is_string())
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": '", name, "' must be a list of strings"));
        items.push_back(std::string(*item.value<std::string>()));
      }
      out->values[name] = absl::StrJoin(items, ",");
    } else if (auto s = node.value<std::string>()) {
      out->values[name] = *s;
    } else if (auto i = node.value<int64_t>(); i && node.is_integer()) {
      out->values[name] = std::to_string(*i);
    } else if (auto d = node.value<double>()) {
      out->values[name] = absl::StrCat(*d);
    } else if (auto b = node.value<bool>()) {
      out->values[name] = *b ? "true" : "false";
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '", name, "' has an unsupported type"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string TomlValues::String(const std::string& key, const std::string& fallback) const {
  auto it = values.find(key);
  return it == values.end() ? fallback : it->second;
}

std::string TomlValues::Path(const std::string& key, const std::string& fallback) const {
  const std::string v = String(key, fallback);
  if (v.empty() || fs::path(v).is_absolute()) return v;
  return (fs::path(folder) / v).lexically_normal().string();
}

absl::StatusOr<int64_t> TomlValues::Int(const std::string& key, int64_t fallback) const {
  if (!Has(key)) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(String(key), &v))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": '", key, "' must be an integer, got ", String(key)));
  return v;
}

absl::StatusOr<double> TomlValues::Double(const std::string& key, double fallback) const {
  if (!Has(key)) return fallback;
  double v;
  if (!absl::SimpleAtod(String(key), &v))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": '", key, "' must be a number, got ", String(key)));
  return v;
}

std::vector<std::string> TomlValues::List(const std::string& key) const {
  if (!Has(key)) return {};
  return absl::StrSplit(String(key), ',', absl::SkipEmpty());
}

absl::StatusOr<TomlValues> ReadToml(const std::string& path, const std::set<std::string>& allowed) {
  if (!fs::exists(path)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  TomlValues out;
  out.path = path;
  out.folder = fs::absolute(path).parent_path().string();
  try {
    const toml::table table = toml::parse_file(path);
    RETURN_IF_ERROR(Flatten(table, "", path, allowed, &out));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", int64_t(e.source().begin.line), ": ",
                                                   std::string(e.description())));
  }
  return out;
}

}  // namespace splitfed::cli
