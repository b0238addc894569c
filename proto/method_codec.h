// One round's learning method on the wire: the coordinator encodes it into RoundSettings, the
// site decodes it. Both ends go through these two functions only, so a method option that is
// added to MethodOptions and the proto is carried (and tested) in one place.
#pragma once

#include "absl/status/statusor.h"
#include "colearning/method.h"
#include "splitfed/v1/federation.pb.h"

namespace splitfed {

void EncodeSiteMethod(const SiteRoundMethod& method, v1::SiteMethod* out);
// Refuses a kind or enum value this build does not know, and options out of their ranges.
absl::StatusOr<SiteRoundMethod> DecodeSiteMethod(const v1::SiteMethod& in);

}  // namespace splitfed
