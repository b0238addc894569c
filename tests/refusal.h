// A refusal is checked by its exact status code and the words that explain it, never only by
// "not ok": a test that accepts any failure passes just as well when the code fails for the
// wrong reason.
#pragma once

#include <gtest/gtest.h>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace splitfed::test_refusal {

inline ::testing::AssertionResult Refused(const absl::Status& status, absl::StatusCode code,
                                          absl::string_view needle = {}) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected a refusal, got OK";
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << ", got " << status;
  }
  if (status.message().find(needle) == absl::string_view::npos) {
    return ::testing::AssertionFailure()
           << "expected the message to mention '" << needle << "', got " << status;
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult Refused(const absl::StatusOr<T>& result, absl::StatusCode code,
                                   absl::string_view needle = {}) {
  return Refused(result.status(), code, needle);
}

}  // namespace splitfed::test_refusal
