// The project's one error style: functions return absl::Status or absl::StatusOr<T>, and
// these two macros pass a failure up unchanged. (The conversion to and from gRPC statuses
// lives in proto/grpc_status.h.)
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                        \
  do {                                                               \
    if (::absl::Status splitfed_status_ = (expr); !splitfed_status_.ok()) \
      return splitfed_status_;                                       \
  } while (0)

#define SPLITFED_STATUS_CONCAT_INNER(a, b) a##b
#define SPLITFED_STATUS_CONCAT(a, b) SPLITFED_STATUS_CONCAT_INNER(a, b)

// `ASSIGN_OR_RETURN(auto x, F());` declares x from F()'s value, or returns F()'s status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  SPLITFED_ASSIGN_OR_RETURN_IMPL(SPLITFED_STATUS_CONCAT(splitfed_statusor_, __LINE__), lhs, expr)
#define SPLITFED_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)
