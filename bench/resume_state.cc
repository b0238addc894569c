// What the per-round resume file costs the coordinator (coordinator/checkpointer.h): writing
// it (archive, fsync, rename, folder fsync, SHA-256) and reading it back (checksum, load),
// for the kit's default U-Net (f = 16, depth 4, deep cut) with SplitFed-CL's teacher body and
// loss weights beside it. Milliseconds, median of the repeats; the file's size.
//
// Usage: bench_resume_state [repeats] [folder] [out.json]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/median.h"
#include "coordinator/checkpointer.h"
#include "split/model_state.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  const int repeats = argc > 1 ? std::stoi(argv[1]) : 10;
  const fs::path folder = argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "splitfed-resume-bench";
  const std::string out_path = argc > 3 ? argv[3] : "";
  const splitfed::UNetConfig config{1, 4, 16, 4};
  const splitfed::SplitSpec split = splitfed::SplitSpec::Deep();
  torch::manual_seed(1);
  splitfed::SplitModel model = splitfed::MakeSplitModel(config, split);
  splitfed::NamedTensors state = splitfed::SplitModelState(model);
  for (auto& [name, t] : splitfed::ExtractState(*model.body)) state["teacher." + name] = t;
  state[splitfed::kLossLogVariances] = torch::zeros({3});
  auto checkpointer = splitfed::Checkpointer::Create(folder.string(), false, config, split, 64);
  if (!checkpointer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpointer.status().message()).c_str());
    return 1;
  }
  std::vector<double> save_ms, load_ms;
  int64_t bytes = 0;
  for (int r = 0; r <= repeats; ++r) {  // the first of each warms up
    const auto start = Clock::now();
    auto saved = checkpointer->SaveResumeState(r + 1, state);
    const auto saved_at = Clock::now();
    if (!saved.ok()) {
      std::fprintf(stderr, "%s\n", std::string(saved.status().message()).c_str());
      return 1;
    }
    auto loaded = splitfed::Checkpointer::LoadResumeState(saved->path, saved->sha256, r + 1);
    const auto loaded_at = Clock::now();
    if (!loaded.ok() || loaded->size() != state.size()) {
      std::fprintf(stderr, "reading back failed\n");
      return 1;
    }
    bytes = static_cast<int64_t>(fs::file_size(saved->path));
    if (r == 0) continue;
    save_ms.push_back(std::chrono::duration<double, std::milli>(saved_at - start).count());
    load_ms.push_back(std::chrono::duration<double, std::milli>(loaded_at - saved_at).count());
  }
  fs::remove_all(folder);
  const double save = splitfed::bench::Median(save_ms), load = splitfed::bench::Median(load_ms);
  std::printf("resume file: %.2f MB, %zu tensors\nsave (write, fsync, rename, SHA-256): %.1f ms\n"
              "load (SHA-256, read): %.1f ms\n",
              bytes / 1e6, state.size(), save, load);
  if (!out_path.empty())
    std::ofstream(out_path) << nlohmann::json{{"bytes", bytes},
                                              {"tensors", state.size()},
                                              {"repeats", repeats},
                                              {"save_ms_median", save},
                                              {"load_ms_median", load},
                                              {"folder", folder.string()}}
                                   .dump(2)
                            << "\n";
  return 0;
}
