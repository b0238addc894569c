// The control-plane requests (Federation's Join, WaitRound and Heartbeat, Admin's Status) and
// the round settings a site decodes from its coordinator. The first byte picks the message.
// Only the settings have a decoder of ours beyond protobuf's parser (DecodeSiteMethod); the
// others are parsed exactly as gRPC parses them before a handler sees them.
#include <cstddef>
#include <cstdint>

#include "proto/method_codec.h"
#include "splitfed/v1/federation.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t* body = data + 1;
  const int length = static_cast<int>(size - 1);
  switch (data[0] % 5) {
    case 0: {
      splitfed::v1::JoinRequest m;
      (void)m.ParseFromArray(body, length);
      break;
    }
    case 1: {
      splitfed::v1::WaitRoundRequest m;
      (void)m.ParseFromArray(body, length);
      break;
    }
    case 2: {
      splitfed::v1::HeartbeatRequest m;
      (void)m.ParseFromArray(body, length);
      break;
    }
    case 3: {
      splitfed::v1::StatusRequest m;
      (void)m.ParseFromArray(body, length);
      break;
    }
    default: {
      splitfed::v1::SiteMethod m;
      if (m.ParseFromArray(body, length)) (void)splitfed::DecodeSiteMethod(m);
      break;
    }
  }
  return 0;
}
