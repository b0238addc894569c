// The coordinator's /metrics page in Prometheus' text exposition format (version 0.0.4):
// splitfed_ names, counters ending in _total, base units (seconds, bytes).
#pragma once

#include <string>

#include "monitor/snapshot.h"

namespace splitfed {

inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

std::string PrometheusText(const MonitorSnapshot& snapshot);

}  // namespace splitfed
