// A SubmitUpdate stream as the server reads it: framed UpdateChunks through UpdateReader, the
// class the server's update call uses, up to the first refusal.
#include <cstddef>
#include <cstdint>

#include "coordinator/submission.h"
#include "fuzz/framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  splitfed::UpdateReader reader("fuzzed-site");
  for (const std::string& frame : splitfed::fuzz::Frames(data, size)) {
    splitfed::v1::UpdateChunk chunk;
    if (!chunk.ParseFromString(frame)) return 0;
    if (!reader.Add(chunk).ok()) return 0;
  }
  (void)std::move(reader).Finish();
  return 0;
}
