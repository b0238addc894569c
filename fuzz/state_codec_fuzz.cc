// Model state entries (the weights a round carries, both ways): framed StateChunks decoded
// into one state, as a site and the coordinator do, so repeated names are met too.
#include <cstddef>
#include <cstdint>

#include "fuzz/framing.h"
#include "proto/state_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, torch::Tensor> state;
  for (const std::string& frame : splitfed::fuzz::Frames(data, size)) {
    splitfed::v1::StateChunk chunk;
    if (!chunk.ParseFromString(frame)) return 0;
    if (!splitfed::DecodeStateEntry(chunk, &state).ok()) return 0;
  }
  return 0;
}
