#include "process/openmp_wait.h"

#include <unistd.h>

#include <cstdlib>

namespace splitfed {

void ShortenOpenMpSpin(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  if (setenv("GOMP_SPINCOUNT", kOpenMpSpinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: /proc is not mounted or the binary went away; run with libgomp's default.
}

}  // namespace splitfed
