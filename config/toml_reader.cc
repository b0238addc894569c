#include "config/toml_reader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status/status_macros.h"

namespace splitfed::config {
namespace fs = std::filesystem;

TomlTable::TomlTable(const toml::table* table, std::string source, std::string prefix,
                     std::string folder)
    : table_(table),
      source_(std::move(source)),
      prefix_(std::move(prefix)),
      folder_(std::move(folder)) {}

std::string TomlTable::Key(const std::string& key) const {
  return prefix_.empty() ? key : absl::StrCat(prefix_, ".", key);
}

bool TomlTable::Has(const std::string& key) const { return table_ && table_->contains(key); }

absl::Status TomlTable::Error(const std::string& key, const std::string& what) const {
  return absl::InvalidArgumentError(absl::StrCat(source_, ": ", Key(key), ": ", what));
}

const toml::node* TomlTable::Node(const std::string& key) {
  known_.insert(key);
  return table_ ? table_->get(key) : nullptr;
}

std::string TomlTable::Absolute(const std::string& path) const {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return fs::absolute(fs::path(folder_) / path).lexically_normal().string();
}

absl::Status TomlTable::String(const std::string& key, std::string* out) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  if (!n->is_string()) return Error(key, "must be a string");
  *out = *n->value<std::string>();
  return absl::OkStatus();
}

absl::Status TomlTable::Path(const std::string& key, std::string* out) {
  std::string text = *out;
  RETURN_IF_ERROR(String(key, &text));
  *out = Absolute(text);
  return absl::OkStatus();
}

absl::Status TomlTable::Int(const std::string& key, int64_t* out, int64_t lo, int64_t hi) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  if (!n->is_integer()) return Error(key, "must be an integer");
  const int64_t v = *n->value<int64_t>();
  if (v < lo || v > hi) return Error(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status TomlTable::Double(const std::string& key, double* out, double lo, double hi) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  if (!n->is_number()) return Error(key, "must be a number");
  const double v = *n->value<double>();
  if (!(v >= lo && v <= hi))
    return Error(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status TomlTable::Bool(const std::string& key, bool* out) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  if (!n->is_boolean()) return Error(key, "must be true or false");
  *out = *n->value<bool>();
  return absl::OkStatus();
}

absl::Status TomlTable::Strings(const std::string& key, std::vector<std::string>* out) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  const toml::array* a = n->as_array();
  if (!a) return Error(key, "must be a list of strings");
  std::vector<std::string> items;
  for (const auto& item : *a) {
    if (!item.is_string()) return Error(key, "must be a list of strings");
    items.push_back(*item.value<std::string>());
  }
  *out = std::move(items);
  return absl::OkStatus();
}

absl::Status TomlTable::Paths(const std::string& key, std::vector<std::string>* out) {
  RETURN_IF_ERROR(Strings(key, out));
  for (std::string& p : *out) p = Absolute(p);
  return absl::OkStatus();
}

absl::Status TomlTable::Seeds(const std::string& key, std::vector<uint64_t>* out) {
  const toml::node* n = Node(key);
  if (!n) return absl::OkStatus();
  const toml::array* a = n->as_array();
  if (!a || a->empty()) return Error(key, "must be a non-empty list of integers");
  std::vector<uint64_t> seeds;
  for (const auto& item : *a) {
    if (!item.is_integer() || *item.value<int64_t>() < 0)
      return Error(key, "must be a list of integers >= 0");
    seeds.push_back(static_cast<uint64_t>(*item.value<int64_t>()));
  }
  *out = std::move(seeds);
  return absl::OkStatus();
}

absl::Status TomlTable::Choice(const std::string& key, const std::vector<std::string>& choices,
                               std::string* out) {
  std::string v = *out;
  RETURN_IF_ERROR(String(key, &v));
  if (std::find(choices.begin(), choices.end(), v) == choices.end())
  {
    std::string list = choices.back();
    if (choices.size() > 1)
      list = absl::StrCat(absl::StrJoin(choices.begin(), choices.end() - 1, ", "), " or ", list);
    return Error(key, absl::StrCat("must be ", list, ", got '", v, "'"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::StatusOr<TomlTable> TomlTable::Table(const std::string& key) {
  const toml::node* n = Node(key);
  if (n && !n->is_table()) return Error(key, absl::StrCat("must be a table [", Key(key), "]"));
  return TomlTable(n ? n->as_table() : nullptr, source_, Key(key), folder_);
}

absl::StatusOr<std::vector<TomlTable>> TomlTable::Tables(const std::string& key) {
  std::vector<TomlTable> tables;
  const toml::node* n = Node(key);
  if (!n) return tables;
  const toml::array* list = n->as_array();
  if (!list) return Error(key, absl::StrCat("must be [[", Key(key), "]] tables"));
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string where = absl::StrCat(Key(key), "[", i, "]");
    const toml::table* t = (*list)[i].as_table();
    if (!t) return absl::InvalidArgumentError(absl::StrCat(source_, ": ", where, ": must be a table"));
    tables.emplace_back(t, source_, where, folder_);
  }
  return tables;
}

absl::Status TomlTable::RejectUnknown() const {
  if (!table_) return absl::OkStatus();
  for (const auto& [key, node] : *table_) {
    const std::string k(key.str());
    if (!known_.count(k))
      return Error(k, absl::StrCat("unknown key (known here: ", absl::StrJoin(known_, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TomlDocument> TomlDocument::Parse(const std::string& text,
                                                 const std::string& source,
                                                 const std::string& folder) {
  TomlDocument doc;
  try {
    doc.root_ = std::make_shared<const toml::table>(toml::parse(text, source));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.source().begin.line, ": ",
                                                   std::string(e.description())));
  }
  doc.source_ = source;
  doc.folder_ = fs::absolute(folder.empty() ? fs::path(".") : fs::path(folder)).string();
  return doc;
}

absl::StatusOr<TomlDocument> TomlDocument::ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the file"));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path, fs::path(path).parent_path().string());
}

TomlTable TomlDocument::Root() const { return TomlTable(root_.get(), source_, "", folder_); }

}  // namespace splitfed::config
