#include "split/openmp_wait.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <unistd.h>

#include <cstdlib>

namespace splitfed {

void ShortenOpenMpSpin(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  if (setenv("GOMP_SPINCOUNT", kOpenMpSpinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: /proc is not mounted or the binary went away; run with libgomp's default.
}

// at::get_num_threads() first gives this thread LibTorch's thread count if it has not run an
// operation yet; otherwise that first operation would set it, over our 1.
SingleThreadedOperations::SingleThreadedOperations() : previous_threads_(at::get_num_threads()) {
  omp_set_num_threads(1);
}

SingleThreadedOperations::~SingleThreadedOperations() { omp_set_num_threads(previous_threads_); }

}  // namespace splitfed
