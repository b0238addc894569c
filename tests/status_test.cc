#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "status/status_macros.h"

namespace splitfed {
namespace {

absl::Status Twice(absl::Status first, int* calls) {
  auto step = [&](absl::Status s) {
    ++*calls;
    return s;
  };
  RETURN_IF_ERROR(step(first));
  RETURN_IF_ERROR(step(absl::OkStatus()));
  return absl::OkStatus();
}

TEST(StatusMacros, ReturnIfErrorPassesTheFailureUpUnchangedAndEvaluatesOnce) {
  int calls = 0;
  EXPECT_TRUE(Twice(absl::OkStatus(), &calls).ok());
  EXPECT_EQ(calls, 2);
  calls = 0;
  const absl::Status refused = Twice(absl::FailedPreconditionError("stale round"), &calls);
  EXPECT_EQ(refused, absl::FailedPreconditionError("stale round"));
  EXPECT_EQ(calls, 1) << "stops at the first failure";
}

absl::StatusOr<std::unique_ptr<int>> Make(bool ok) {
  if (!ok) return absl::NotFoundError("no such site");
  return std::make_unique<int>(7);
}

absl::StatusOr<int> UseTwo(bool first, bool second) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> a, Make(first));  // move-only values work
  ASSIGN_OR_RETURN(auto b, Make(second));                 // two on one function
  return *a + *b;
}

TEST(StatusMacros, AssignOrReturnDeclaresTheValueOrReturnsTheStatus) {
  EXPECT_EQ(*UseTwo(true, true), 14);
  EXPECT_EQ(UseTwo(false, true).status(), absl::NotFoundError("no such site"));
  EXPECT_EQ(UseTwo(true, false).status(), absl::NotFoundError("no such site"));
}

}  // namespace
}  // namespace splitfed
