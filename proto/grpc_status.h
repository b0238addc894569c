// Status conversion between the gRPC wire and the code's absl::Status, in one place: the
// services answer with the coordinator's errors as they are, and the sites see them with the
// same code, so that what a site retries is decided by code (client/site_client.cc).
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace splitfed {

// absl's canonical codes are gRPC's, number for number; the conversions rely on it.
static_assert(static_cast<int>(absl::StatusCode::kAborted) == grpc::StatusCode::ABORTED &&
              static_cast<int>(absl::StatusCode::kNotFound) == grpc::StatusCode::NOT_FOUND &&
              static_cast<int>(absl::StatusCode::kUnavailable) == grpc::StatusCode::UNAVAILABLE &&
              static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                  grpc::StatusCode::UNAUTHENTICATED);

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// `what` names the call for the message, e.g. "wait for round: round 3 is not open".
inline absl::Status FromGrpcStatus(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace splitfed
