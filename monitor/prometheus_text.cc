#include "monitor/prometheus_text.h"

#include <cmath>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace splitfed {
namespace {

// Label values escape backslash, double quote and newline.
std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

class Page {
 public:
  // One metric family: its HELP and TYPE lines, then its samples.
  void Family(const std::string& name, const char* type, const std::string& help) {
    absl::StrAppend(&text_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
    name_ = name;
  }
  void Sample(double value, const std::string& labels = "", const std::string& suffix = "") {
    absl::StrAppend(&text_, name_, suffix, labels.empty() ? "" : absl::StrCat("{", labels, "}"),
                    " ", Number(value), "\n");
  }
  // A per-site family; sites without a value are left out.
  void PerSite(const MonitorSnapshot& s, const std::string& name, const char* type,
               const std::string& help,
               const std::function<std::optional<double>(const SiteSnapshot&)>& value) {
    Family(name, type, help);
    for (const SiteSnapshot& site : s.sites)
      if (std::optional<double> v = value(site))
        Sample(*v, absl::StrCat("site=\"", Escape(site.name), "\""));
  }
  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
  std::string name_;
};

}  // namespace

std::string PrometheusText(const MonitorSnapshot& s) {
  Page p;
  p.Family("splitfed_run_info", "gauge", "The run this coordinator serves (always 1).");
  p.Sample(1, absl::StrCat("run_id=\"", s.run_id, "\",name=\"", Escape(s.run_name),
                           "\",method=\"", Escape(s.method), "\",mode=\"", Escape(s.mode), "\""));
  p.Family("splitfed_run_state", "gauge", "1 for the run's current state, 0 for the others.");
  for (const std::string& state : RunStates())
    p.Sample(state == s.state ? 1 : 0, absl::StrCat("state=\"", state, "\""));
  p.Family("splitfed_run_resumes_total", "counter",
           "Times this run was taken up again by a restarted coordinator.");
  p.Sample(static_cast<double>(s.resumes));
  p.Family("splitfed_rounds_planned", "gauge", "Rounds the run is configured for.");
  p.Sample(static_cast<double>(s.rounds_planned));
  p.Family("splitfed_rounds_completed_total", "counter", "Rounds completed and aggregated.");
  p.Sample(static_cast<double>(s.rounds_completed));
  p.Family("splitfed_current_round", "gauge", "The open round (0 between rounds).");
  p.Sample(static_cast<double>(s.current_round));
  p.Family("splitfed_round_duration_seconds", "summary",
           "Time from a round's opening to its record, over the rounds this process completed.");
  p.Sample(s.round_duration_seconds_sum, "", "_sum");
  p.Sample(static_cast<double>(s.round_duration_count), "", "_count");
  p.Family("splitfed_stale_updates_total", "counter",
           "Messages refused because their round had already completed.");
  p.Sample(static_cast<double>(s.stale_updates_total));
  if (!s.history.empty()) {
    p.Family("splitfed_validation_dice", "gauge",
             "Mean validation Dice of the included sites in the last completed round.");
    p.Sample(s.history.back().mean_validation_dice);
  }

  int64_t joined = 0, connected = 0;
  for (const SiteSnapshot& site : s.sites) {
    joined += site.joined;
    connected += site.connected;
  }
  p.Family("splitfed_sites_enrolled", "gauge", "Sites enrolled in the run.");
  p.Sample(static_cast<double>(s.sites_enrolled));
  p.Family("splitfed_sites_joined", "gauge", "Enrolled sites that have joined.");
  p.Sample(static_cast<double>(joined));
  p.Family("splitfed_sites_connected", "gauge", "Sites connected now.");
  p.Sample(static_cast<double>(connected));

  p.PerSite(s, "splitfed_site_connected", "gauge", "1 while the site is connected.",
            [](const SiteSnapshot& x) { return std::optional<double>(x.connected ? 1 : 0); });
  p.PerSite(s, "splitfed_site_last_seen_age_seconds", "gauge",
            "Seconds since the coordinator last heard from the site.",
            [](const SiteSnapshot& x) { return x.last_seen_age_seconds; });
  p.PerSite(s, "splitfed_site_images", "gauge", "Training images the site reports (n_k).",
            [](const SiteSnapshot& x) { return std::optional<double>(x.images); });
  p.PerSite(s, "splitfed_site_received_bytes_total", "counter",
            "Bytes the coordinator received from the site on the Split and update streams.",
            [](const SiteSnapshot& x) { return std::optional<double>(x.bytes_received_total); });
  p.PerSite(s, "splitfed_site_sent_bytes_total", "counter",
            "Bytes the coordinator sent to the site on the round and Split streams.",
            [](const SiteSnapshot& x) { return std::optional<double>(x.bytes_sent_total); });
  p.PerSite(s, "splitfed_site_rounds_included_total", "counter",
            "Rounds whose aggregation included the site.",
            [](const SiteSnapshot& x) { return std::optional<double>(x.rounds_included); });
  p.PerSite(s, "splitfed_site_failures_total", "counter",
            "Rounds the site was left out of (stream broken, update refused, deadline missed).",
            [](const SiteSnapshot& x) { return std::optional<double>(x.failures_total); });
  p.PerSite(s, "splitfed_site_train_loss", "gauge",
            "The site's training loss in the last round it submitted.",
            [](const SiteSnapshot& x) { return x.train_loss; });
  p.PerSite(s, "splitfed_site_validation_dice", "gauge",
            "The site's Dice on its own validation images in the last round it submitted.",
            [](const SiteSnapshot& x) { return x.validation_dice; });
  p.PerSite(s, "splitfed_site_reliability", "gauge",
            "The site's label reliability q_k in the last round it submitted.",
            [](const SiteSnapshot& x) { return x.reliability; });
  p.PerSite(s, "splitfed_site_aggregation_weight", "gauge",
            "The site's aggregation weight a_k in the last completed round.",
            [](const SiteSnapshot& x) { return x.aggregation_weight; });
  return p.Take();
}

}  // namespace splitfed
