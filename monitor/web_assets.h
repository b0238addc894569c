// The dashboard's files, compiled into the binary (web/, generated into web_assets.cc by
// embed_web.cmake): nothing is fetched or read from disk at run time.
#pragma once

#include <string_view>

namespace splitfed {

struct WebAsset {
  const char* name;          // e.g. "dashboard.js"
  const char* content_type;
  std::string_view content;
};

const WebAsset* FindWebAsset(std::string_view name);  // nullptr if there is none

}  // namespace splitfed
