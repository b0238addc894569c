#include "sim/report.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "colearning/reliability.h"
#include "datasets/png_io.h"
#include "status/status_macros.h"

namespace splitfed::sim {
namespace fs = std::filesystem;
namespace {

absl::Status WriteFile(const fs::path& path, const std::string& text) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  // Write then rename, so a reader (or a Ctrl-C) never sees half a file.
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot write"));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

void MeanStd(const std::vector<double>& v, double* mean, double* sd) {
  *mean = *sd = 0;
  if (v.empty()) return;
  for (double x : v) *mean += x;
  *mean /= v.size();
  if (v.size() < 2) return;
  for (double x : v) *sd += (x - *mean) * (x - *mean);
  *sd = std::sqrt(*sd / (v.size() - 1));  // sample standard deviation over seeds
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '<') out += "&lt;";
    else if (ch == '>') out += "&gt;";
    else if (ch == '&') out += "&amp;";
    else out += ch;
  }
  return out;
}

std::string Csv(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

nlohmann::json ScoresJson(const Scores& s) {
  return {{"dice", s.dice}, {"iou", s.iou}, {"hd95", s.hd95}, {"dice_per_class", s.dice_per_class}};
}

Scores ScoresFromJson(const nlohmann::json& j) {
  Scores s;
  s.dice = j.at("dice").get<double>();
  s.iou = j.at("iou").get<double>();
  s.hd95 = j.at("hd95").get<double>();
  s.dice_per_class = j.at("dice_per_class").get<std::vector<double>>();
  return s;
}

nlohmann::json RunJson(const RunResult& r) {
  nlohmann::json rounds = nlohmann::json::array();
  for (const RoundResult& round : r.rounds) {
    nlohmann::json sites = nlohmann::json::array();
    for (const SiteRoundResult& s : round.sites)
      sites.push_back({{"site", s.site},
                       {"included", s.included},
                       {"train_loss", s.train_loss},
                       {"validation_dice", s.validation_dice},
                       {"validation_loss", s.validation_loss},
                       {"aggregation_weight", s.aggregation_weight},
                       {"reliability", s.reliability},
                       {"bytes_in", s.bytes_in},
                       {"bytes_out", s.bytes_out},
                       {"flagged", s.flagged},
                       {"flagged_corrupted", s.flagged_corrupted},
                       {"corrupted", s.corrupted},
                       {"detection_precision", s.detection_precision},
                       {"detection_recall", s.detection_recall}});
    rounds.push_back({{"round", round.round}, {"test", ScoresJson(round.test)}, {"sites", sites}});
  }
  return {{"method", r.method},
          {"noise", r.noise},
          {"seed", r.seed},
          {"seconds", r.seconds},
          {"images_trained", r.images_trained},
          {"model_path", r.model_path},
          {"final_test", ScoresJson(r.final_test)},
          {"selected_round", r.selected_round},
          {"selected_test", ScoresJson(r.selected_test)},
          {"rounds", rounds}};
}

RunResult RunFromJson(const nlohmann::json& j) {
  RunResult r;
  r.method = j.at("method").get<std::string>();
  r.noise = j.at("noise").get<std::string>();
  r.seed = j.at("seed").get<uint64_t>();
  r.seconds = j.at("seconds").get<double>();
  r.images_trained = j.at("images_trained").get<int64_t>();
  r.model_path = j.at("model_path").get<std::string>();
  r.final_test = ScoresFromJson(j.at("final_test"));
  r.selected_round = j.at("selected_round").get<int64_t>();
  r.selected_test = ScoresFromJson(j.at("selected_test"));
  for (const nlohmann::json& jr : j.at("rounds")) {
    RoundResult round;
    round.round = jr.at("round").get<int64_t>();
    round.test = ScoresFromJson(jr.at("test"));
    for (const nlohmann::json& js : jr.at("sites")) {
      SiteRoundResult s;
      s.site = js.at("site").get<std::string>();
      s.included = js.at("included").get<bool>();
      s.train_loss = js.at("train_loss").get<double>();
      s.validation_dice = js.at("validation_dice").get<double>();
      s.validation_loss = js.at("validation_loss").get<double>();
      s.aggregation_weight = js.at("aggregation_weight").get<double>();
      s.reliability = js.at("reliability").get<double>();
      s.bytes_in = js.at("bytes_in").get<int64_t>();
      s.bytes_out = js.at("bytes_out").get<int64_t>();
      s.flagged = js.at("flagged").get<int64_t>();
      // Absent from records written before detection was pooled: those stay out of the pool.
      s.flagged_corrupted = js.value("flagged_corrupted", int64_t{-1});
      s.corrupted = js.value("corrupted", int64_t{-1});
      s.detection_precision = js.at("detection_precision").get<double>();
      s.detection_recall = js.at("detection_recall").get<double>();
      round.sites.push_back(std::move(s));
    }
    r.rounds.push_back(std::move(round));
  }
  r.finished = true;
  return r;
}

}  // namespace

std::string RunSlug(const std::string& method, const std::string& noise) {
  std::string out;
  for (char ch : method + "-" + noise) {
    const bool keep = std::isalnum(static_cast<unsigned char>(ch));
    if (keep) out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

std::vector<SummaryRow> Summarize(const std::vector<RunResult>& runs) {
  std::vector<SummaryRow> rows;
  std::map<std::pair<std::string, std::string>, std::vector<const RunResult*>> groups;
  std::vector<std::pair<std::string, std::string>> order;
  for (const RunResult& r : runs) {
    auto key = std::pair{r.method, r.noise};
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(&r);
  }
  std::map<uint64_t, double> oracle_by_seed, oracle_selected_by_seed;
  for (const RunResult& r : runs)
    if (r.method == "oracle") {
      oracle_by_seed[r.seed] = r.final_test.dice;
      oracle_selected_by_seed[r.seed] = r.selected_test.dice;
    }
  for (const auto& key : order) {
    SummaryRow row;
    row.method = key.first;
    row.noise = key.second;
    std::vector<double> dice, iou, hd95, deltas, selected, selected_deltas;
    int64_t flagged = 0, hits = 0, corrupted = 0;  // pooled over the scored site-rounds
    std::vector<std::vector<double>> per_class;
    for (const RunResult* r : groups[key]) {
      row.seeds.push_back(r->seed);
      selected.push_back(r->selected_test.dice);
      if (oracle_by_seed.count(r->seed))
        selected_deltas.push_back(r->selected_test.dice - oracle_selected_by_seed[r->seed]);
      for (const RoundResult& round : r->rounds)
        for (const SiteRoundResult& site : round.sites) {
          if (site.flagged < 0 || site.flagged_corrupted < 0 || site.corrupted < 0) continue;
          flagged += site.flagged;
          hits += site.flagged_corrupted;
          corrupted += site.corrupted;
        }
      dice.push_back(r->final_test.dice);
      iou.push_back(r->final_test.iou);
      hd95.push_back(r->final_test.hd95);
      if (per_class.size() < r->final_test.dice_per_class.size())
        per_class.resize(r->final_test.dice_per_class.size());
      for (size_t c = 0; c < r->final_test.dice_per_class.size(); ++c)
        per_class[c].push_back(r->final_test.dice_per_class[c]);
      if (oracle_by_seed.count(r->seed)) deltas.push_back(r->final_test.dice - oracle_by_seed[r->seed]);
    }
    MeanStd(dice, &row.dice_mean, &row.dice_std);
    MeanStd(iou, &row.iou_mean, &row.iou_std);
    MeanStd(hd95, &row.hd95_mean, &row.hd95_std);
    for (const auto& c : per_class) {
      double m, s;
      MeanStd(c, &m, &s);
      row.dice_per_class_mean.push_back(m);
    }
    // Paired by seed: only seeds that also have an oracle run count.
    row.has_delta = deltas.size() == dice.size() && !deltas.empty();
    MeanStd(selected, &row.selected_dice_mean, &row.selected_dice_std);
    if (row.has_delta) {
      double s;
      MeanStd(deltas, &row.delta_dice, &s);
      MeanStd(selected_deltas, &row.selected_delta_dice, &s);
    }
    // Without any known corrupted mask (clean labels, real annotators) there is no truth to
    // score flags against: precision would read 0 whatever the flags were worth.
    if (corrupted > 0) {
      if (flagged > 0) row.detection_precision = static_cast<double>(hits) / flagged;
      row.detection_recall = static_cast<double>(hits) / corrupted;
    }
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::string> RecoveryLines(const ExperimentConfig& config,
                                       const std::vector<SummaryRow>& rows) {
  std::vector<std::string> lines;
  const SummaryRow* oracle = nullptr;
  for (const SummaryRow& r : rows)
    if (r.method == "oracle") oracle = &r;
  if (!oracle) return lines;
  for (const SummaryRow& cl : rows) {
    if (MethodOf(cl.method, config).method.kind != MethodKind::kColearning) continue;
    for (const SummaryRow& fedavg : rows) {
      if (fedavg.method != "splitfed" || fedavg.noise != cl.noise || !fedavg.has_delta ||
          !cl.has_delta)
        continue;
      const double lost = -100 * fedavg.delta_dice;
      const double gained = 100 * (cl.delta_dice - fedavg.delta_dice);
      if (lost <= 0.05)
        lines.push_back(absl::StrFormat(
            "%s: FedAvg loses nothing to label noise here (%s); %s is %+.1f Dice points from it",
            cl.method, cl.noise, cl.method, gained));
      else if (gained > lost)  // above the oracle too: "recovers 0.4 of 0.2" would read wrong
        lines.push_back(absl::StrFormat(
            "%s recovers all %.1f Dice points FedAvg loses to label noise (%s), and %.1f more",
            cl.method, lost, cl.noise, gained - lost));
      else
        lines.push_back(absl::StrFormat(
            "%s recovers %.1f of the %.1f Dice points FedAvg loses to label noise (%s)",
            cl.method, gained, lost, cl.noise));
    }
  }
  return lines;
}

std::string LineChartSvg(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<Series>& series) {
  constexpr double kW = 640, kH = 400, kLeft = 60, kRight = 170, kTop = 40, kBottom = 50;
  double x0 = 1e300, x1 = -1e300, y0 = 0, y1 = 1;
  for (const Series& s : series)
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x);
      y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (x0 > x1) x0 = 0, x1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * (kW - kLeft - kRight); };
  auto py = [&](double y) { return kH - kBottom - (y - y0) / (y1 - y0) * (kH - kTop - kBottom); };
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
      "fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n",
      kW, kH, kLeft, Escape(title));
  // Axes with five ticks each.
  absl::StrAppendFormat(&svg,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                        kLeft, py(y0), kW - kRight, py(y0), kLeft, py(y0), kLeft, py(y1));
  for (int i = 0; i <= 4; ++i) {
    const double yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.4g</text>\n",
                          kLeft, py(yv), kW - kRight, py(yv), kLeft - 6, py(yv) + 4, yv, px(xv),
                          py(y0) + 18, xv);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n"
                        "<text x=\"16\" y=\"%.1f\" transform=\"rotate(-90 16 %.1f)\" "
                        "text-anchor=\"middle\">%s</text>\n",
                        (kLeft + kW - kRight) / 2, kH - 10, Escape(x_label), (kTop + kH - kBottom) / 2,
                        (kTop + kH - kBottom) / 2, Escape(y_label));
  for (size_t i = 0; i < series.size(); ++i) {
    const char* colour = kColours[i % 10];
    std::string points;
    for (const auto& [x, y] : series[i].points)
      absl::StrAppendFormat(&points, "%.1f,%.1f ", px(x), py(y));
    absl::StrAppendFormat(&svg,
                          "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n"
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                          colour, points, kW - kRight + 12, kTop + 18.0 * i, colour,
                          kW - kRight + 30, kTop + 18.0 * i + 10, Escape(series[i].name));
  }
  return svg + "</svg>\n";
}

absl::Status WriteResults(const ExperimentConfig& config, const std::vector<RunResult>& runs) {
  const fs::path out(config.out_dir);
  std::string rounds_csv = "method,noise,seed,round,test_dice,test_iou,test_hd95\n";
  std::string sites_csv =
      "method,noise,seed,round,site,included,train_loss,validation_dice,aggregation_weight,"
      "reliability,bytes_in,bytes_out,flagged,detection_precision,detection_recall,"
      "validation_loss,flagged_corrupted,corrupted\n";
  std::string rounds_jsonl, sites_jsonl;
  for (const RunResult& r : runs)
    for (const RoundResult& round : r.rounds) {
      absl::StrAppendFormat(&rounds_csv, "%s,%s,%d,%d,%.6f,%.6f,%.4f\n", Csv(r.method),
                            Csv(r.noise), r.seed, round.round, round.test.dice, round.test.iou,
                            round.test.hd95);
      nlohmann::json line = {{"method", r.method}, {"noise", r.noise}, {"seed", r.seed},
                             {"round", round.round}, {"test", ScoresJson(round.test)}};
      rounds_jsonl += line.dump() + "\n";
      for (const SiteRoundResult& s : round.sites) {
        absl::StrAppendFormat(&sites_csv,
                              "%s,%s,%d,%d,%s,%d,%.6f,%.6f,%.6f,%.6f,%d,%d,%d,%.4f,%.4f,%.6f,%d,%d\n",
                              Csv(r.method), Csv(r.noise), r.seed, round.round, Csv(s.site),
                              s.included ? 1 : 0, s.train_loss, s.validation_dice,
                              s.aggregation_weight, s.reliability, s.bytes_in, s.bytes_out,
                              s.flagged, s.detection_precision, s.detection_recall,
                              s.validation_loss, s.flagged_corrupted, s.corrupted);
        nlohmann::json site = {{"method", r.method},
                               {"noise", r.noise},
                               {"seed", r.seed},
                               {"round", round.round},
                               {"site", s.site},
                               {"included", s.included},
                               {"train_loss", s.train_loss},
                               {"validation_dice", s.validation_dice},
                               {"validation_loss", s.validation_loss},
                               {"aggregation_weight", s.aggregation_weight},
                               {"reliability", s.reliability},
                               {"bytes_in", s.bytes_in},
                               {"bytes_out", s.bytes_out},
                               {"flagged", s.flagged},
                               {"flagged_corrupted", s.flagged_corrupted},
                               {"corrupted", s.corrupted},
                               {"detection_precision", s.detection_precision},
                               {"detection_recall", s.detection_recall}};
        sites_jsonl += site.dump() + "\n";
      }
    }
  std::string runs_csv =
      "method,noise,seed,rounds,seconds,images_trained,images_per_second,test_dice,test_iou,"
      "test_hd95,model,selected_round,selected_test_dice\n";
  for (const RunResult& r : runs)
    absl::StrAppendFormat(&runs_csv, "%s,%s,%d,%d,%.3f,%d,%.2f,%.6f,%.6f,%.4f,%s,%d,%.6f\n",
                          Csv(r.method), Csv(r.noise), r.seed, r.rounds.size(), r.seconds,
                          r.images_trained, r.seconds > 0 ? r.images_trained / r.seconds : 0.0,
                          r.final_test.dice, r.final_test.iou, r.final_test.hd95,
                          Csv(r.model_path), r.selected_round, r.selected_test.dice);
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"runs.csv", runs_csv},
           {"rounds.csv", rounds_csv},
           {"rounds.jsonl", rounds_jsonl},
           {"site_rounds.csv", sites_csv},
           {"site_rounds.jsonl", sites_jsonl}})
    RETURN_IF_ERROR(WriteFile(out / name, text));

  // The summary: final-round test scores per method × noise setting, over seeds.
  const std::vector<SummaryRow> rows = Summarize(runs);
  nlohmann::json summary = nlohmann::json::array();
  std::string md = absl::StrCat(
      "# ", config.name, "\n\nFinal-round scores on the clean test set, mean ± std over seeds. "
      "ΔDice is against the clean oracle with the same seeds (Dice points ×100). "
      "\"Selected\" is the test Dice at the round with the lowest mean validation loss of the "
      "sites (on their own masks), as a consortium without test labels would pick it. "
      "Detection: precision / recall of SplitFed-CL's flags against the corrupted masks after "
      "the warm-up, pooled over sites, rounds and seeds; – where there are no known corrupted "
      "masks (clean labels, real annotators).\n\n"
      "| method | noise | seeds | Dice | IoU | HD95 (px) | ΔDice | Dice (selected) | "
      "ΔDice (selected) | detection P / R |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  for (const SummaryRow& row : rows) {
    nlohmann::json j = {{"method", row.method},       {"noise", row.noise},
                        {"seeds", row.seeds},         {"dice_mean", row.dice_mean},
                        {"dice_std", row.dice_std},   {"iou_mean", row.iou_mean},
                        {"iou_std", row.iou_std},     {"hd95_mean", row.hd95_mean},
                        {"hd95_std", row.hd95_std},   {"dice_per_class_mean", row.dice_per_class_mean}};
    j["delta_dice"] = row.has_delta ? nlohmann::json(row.delta_dice) : nlohmann::json(nullptr);
    j["selected_dice_mean"] = row.selected_dice_mean;
    j["selected_dice_std"] = row.selected_dice_std;
    j["selected_delta_dice"] =
        row.has_delta ? nlohmann::json(row.selected_delta_dice) : nlohmann::json(nullptr);
    auto maybe = [](double v) { return v >= 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
    j["detection_precision"] = maybe(row.detection_precision);
    j["detection_recall"] = maybe(row.detection_recall);
    summary.push_back(j);
    const std::string detection =
        row.detection_precision < 0 && row.detection_recall < 0
            ? "–"
            : absl::StrFormat("%s / %s",
                              row.detection_precision < 0
                                  ? "–" : absl::StrFormat("%.2f", row.detection_precision),
                              row.detection_recall < 0
                                  ? "–" : absl::StrFormat("%.2f", row.detection_recall));
    absl::StrAppendFormat(
        &md, "| %s | %s | %s | %.3f ± %.3f | %.3f ± %.3f | %.2f ± %.2f | %s | %.3f ± %.3f | %s | %s |\n",
        row.method, row.noise, absl::StrJoin(row.seeds, ","), row.dice_mean, row.dice_std,
        row.iou_mean, row.iou_std, row.hd95_mean, row.hd95_std,
        row.has_delta ? absl::StrFormat("%+.1f", 100 * row.delta_dice) : "–",
        row.selected_dice_mean, row.selected_dice_std,
        row.has_delta ? absl::StrFormat("%+.1f", 100 * row.selected_delta_dice) : "–", detection);
  }
  const std::vector<std::string> recovery = RecoveryLines(config, rows);
  if (!recovery.empty()) md += "\n" + absl::StrJoin(recovery, "\n") + "\n";
  RETURN_IF_ERROR(WriteFile(out / "summary.json", summary.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFile(out / "summary.md", md));

  // Plots: test Dice per round (mean over seeds) per noise setting, the oracle on each; and
  // each site's aggregation weight per round (first seed) per method and setting.
  std::set<std::string> noises;
  for (const RunResult& r : runs)
    if (r.method != "oracle") noises.insert(r.noise);
  if (noises.empty())
    for (const RunResult& r : runs) noises.insert(r.noise);
  for (const std::string& noise : noises) {
    std::map<std::string, std::map<int64_t, std::vector<double>>> by_method;
    for (const RunResult& r : runs)
      if (r.noise == noise || r.method == "oracle")
        for (const RoundResult& round : r.rounds)
          by_method[r.method][round.round].push_back(round.test.dice);
    std::vector<Series> series;
    for (const auto& [method, per_round] : by_method) {
      Series s{method, {}};
      for (const auto& [round, values] : per_round) {
        double m, sd;
        MeanStd(values, &m, &sd);
        s.points.push_back({double(round), m});
      }
      series.push_back(s);
    }
    const std::string svg = LineChartSvg(absl::StrCat("Test Dice per round: ", noise), "round",
                                         "foreground Dice", series);
    if (auto s = WriteFile(out / "plots" / ("dice-" + RunSlug("", noise) + ".svg"), svg); !s.ok())
      return s;
  }
  std::set<std::pair<std::string, std::string>> drawn;
  for (const RunResult& r : runs) {
    if (!drawn.insert({r.method, r.noise}).second) continue;  // first seed only
    std::map<std::string, Series> per_site;
    for (const RoundResult& round : r.rounds)
      for (const SiteRoundResult& s : round.sites) {
        per_site[s.site].name = s.site;
        per_site[s.site].points.push_back({double(round.round), s.aggregation_weight});
      }
    std::vector<Series> series;
    for (auto& [name, s] : per_site) series.push_back(s);
    const std::string svg = LineChartSvg(
        absl::StrCat("Aggregation weight per site: ", r.method, ", ", r.noise, ", seed ", r.seed),
        "round", "a_k", series);
    if (auto s = WriteFile(out / "plots" / ("weights-" + RunSlug(r.method, r.noise) + ".svg"), svg);
        !s.ok())
      return s;
  }
  return absl::OkStatus();
}

absl::Status WriteNoisePreviews(const ExperimentConfig& config, const NoiseSetting& noise,
                                const SimData& data) {
  const fs::path folder = fs::path(config.out_dir) / "preview" / RunSlug("", noise.name);
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(folder.string(), ": ", ec.message()));
  // How far each site's masks are from the truth, measured: the mean foreground Dice of its
  // masks against the clean ones, over all its images and over the corrupted ones.
  std::string quality = "site,images,corrupted,mask_dice_all,mask_dice_corrupted\n";
  for (const SiteData& site : data.sites) {
    const std::vector<double> dice = colearning::PerImageReliability(
        site.annotated.masks, site.clean.masks, site.clean.num_classes);
    double all = 0, corrupted = 0;
    int64_t n_corrupted = 0;
    for (size_t i = 0; i < dice.size(); ++i) {
      all += dice[i];
      if (site.corrupted[i]) corrupted += dice[i], ++n_corrupted;
    }
    // No corrupted image (a clean site, or real annotators): nothing to average, left empty.
    absl::StrAppendFormat(&quality, "%s,%d,%d,%.4f,%s\n", Csv(site.name), dice.size(),
                          n_corrupted, dice.empty() ? 1.0 : all / dice.size(),
                          n_corrupted ? absl::StrFormat("%.4f", corrupted / n_corrupted) : "");
  }
  RETURN_IF_ERROR(WriteFile(folder / "mask_quality.csv", quality));
  for (const SiteData& site : data.sites) {
    std::vector<int64_t> picks;  // corrupted images first, then any, up to four
    for (int64_t i = 0; i < site.clean.size() && picks.size() < 4; ++i)
      if (site.corrupted[i]) picks.push_back(i);
    for (int64_t i = 0; i < site.clean.size() && picks.size() < 4; ++i)
      if (!site.corrupted[i]) picks.push_back(i);
    const int64_t h = site.clean.images.size(2), w = site.clean.images.size(3);
    const int64_t width = w * picks.size();
    std::vector<uint8_t> rgb(h * width * 3, 0);
    for (size_t p = 0; p < picks.size(); ++p) {
      torch::Tensor image = site.clean.images[picks[p]].mean(0);
      image = (image - image.min()) / (image.max() - image.min() + 1e-6) * 255;
      const torch::Tensor grey = image.to(torch::kUInt8).contiguous();
      const torch::Tensor clean = site.clean.masks[picks[p]].contiguous();
      const torch::Tensor noisy = site.annotated.masks[picks[p]].contiguous();
      auto edge = [&](const torch::Tensor& m, int64_t y, int64_t x) {
        const int64_t* v = m.data_ptr<int64_t>();
        const int64_t l = v[y * w + x];
        return (y > 0 && v[(y - 1) * w + x] != l) || (x > 0 && v[y * w + x - 1] != l) ||
               (y + 1 < h && v[(y + 1) * w + x] != l) || (x + 1 < w && v[y * w + x + 1] != l);
      };
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          uint8_t* px = &rgb[(y * width + p * w + x) * 3];
          const uint8_t g = grey.data_ptr<uint8_t>()[y * w + x];
          px[0] = px[1] = px[2] = g;
          const bool c = edge(clean, y, x), n = edge(noisy, y, x);
          if (c && n) px[0] = 255, px[1] = 255, px[2] = 0;  // both agree: yellow
          else if (c) px[0] = 0, px[1] = 220, px[2] = 0;   // clean: green
          else if (n) px[0] = 255, px[1] = 0, px[2] = 0;   // the site's own: red
        }
    }
    if (picks.empty()) continue;
    if (auto s = WriteRgbPng8((folder / (site.name + ".png")).string(), rgb, width, h); !s.ok())
      return s;
  }
  return absl::OkStatus();
}

std::string RunFileName(const RunResult& run) {
  return absl::StrCat(RunSlug(run.method, run.noise), "-seed", run.seed, ".json");
}

absl::Status SaveRun(const ExperimentConfig& config, const RunResult& run) {
  return WriteFile(fs::path(config.out_dir) / "runs" / RunFileName(run), RunJson(run).dump() + "\n");
}

absl::StatusOr<std::vector<RunResult>> LoadRuns(const ExperimentConfig& config) {
  const fs::path folder = fs::path(config.out_dir) / "runs";
  std::vector<RunResult> loaded;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return loaded;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder, ec))
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    std::ifstream in(file);
    try {
      loaded.push_back(RunFromJson(nlohmann::json::parse(in)));
    } catch (const std::exception& e) {
      return absl::DataLossError(absl::StrCat(file.string(), ": not a run record (", e.what(),
                                              "); remove it to run that run again"));
    }
  }
  // The plan's order, so that tables read the same however the runs were split.
  std::map<std::string, size_t> position;
  const std::vector<PlannedRun> plan = PlanRuns(config);
  for (size_t i = 0; i < plan.size(); ++i)
    position[absl::StrCat(plan[i].method, "\n", plan[i].noise_name, "\n", plan[i].seed)] = i;
  auto rank = [&](const RunResult& r) {
    auto it = position.find(absl::StrCat(r.method, "\n", r.noise, "\n", r.seed));
    return it == position.end() ? plan.size() : it->second;
  };
  std::stable_sort(loaded.begin(), loaded.end(),
                   [&](const RunResult& a, const RunResult& b) { return rank(a) < rank(b); });
  return loaded;
}

}  // namespace splitfed::sim
