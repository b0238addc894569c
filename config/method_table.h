// The one [method] schema (docs/ALGORITHM.md §3-4, §10): the same keys, ranges and messages in
// coordinator.toml, in experiment files and in their [[variant]] tables.
#pragma once

#include "colearning/method.h"
#include "config/toml_reader.h"

namespace splitfed::config {

// Reads the [method] keys of `table` into `out`; a key left out keeps `out`'s value. Does not
// call RejectUnknown(), so a [[variant]] may hold keys of its own beside these.
absl::Status ReadMethodTable(TomlTable& table, MethodOptions* out);

}  // namespace splitfed::config
