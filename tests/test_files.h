// Small file helpers shared by the test binaries.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace splitfed::test_files {

// The whole file as text ("" if it cannot be read: the assertions that follow then fail).
inline std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace splitfed::test_files
