// How a fuzz input carries a stream of messages: each frame is a 2-byte little-endian length
// and that many bytes (a last frame cut short keeps what is there). write_seeds uses the same
// framing, so its seeds are streams the targets read back as written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace splitfed::fuzz {

inline std::vector<std::string> Frames(const uint8_t* data, size_t size) {
  std::vector<std::string> frames;
  size_t at = 0;
  while (at + 2 <= size) {
    const size_t length = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    const size_t take = length < size - at ? length : size - at;
    frames.emplace_back(reinterpret_cast<const char*>(data + at), take);
    at += take;
  }
  return frames;
}

inline void AppendFrame(const std::string& message, std::string* out) {
  out->push_back(static_cast<char>(message.size() & 0xff));
  out->push_back(static_cast<char>((message.size() >> 8) & 0xff));
  out->append(message);
}

}  // namespace splitfed::fuzz
