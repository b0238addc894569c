// An experiment file (TOML): parsed, every table read and the result validated, as
// `splitfed sim --config` does. Relative paths resolve against a folder that does not exist.
#include <cstddef>
#include <cstdint>
#include <string>

#include "sim/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)splitfed::sim::ParseExperiment(text, "fuzzed.toml", "/nonexistent");
  return 0;
}
