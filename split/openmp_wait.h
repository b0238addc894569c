// How OpenMP runs LibTorch's operations: how long idle workers busy-wait before sleeping (for
// the whole process), and a scope in which one thread's operations run single-threaded.
#pragma once

namespace splitfed {

// The spin count `splitfed` runs with unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set.
inline constexpr const char* kOpenMpSpinCount = "10000";

// In split training the two sides of the cut take turns: while the coordinator runs the
// body, the site waits, and the other way round. libgomp's idle workers busy-wait ~300 000
// spins (milliseconds) after each parallel region, so the waiting side keeps a core the
// computing side needs; with a short spin the split over loopback trains markedly faster
// (docs/PERFORMANCE.md). libgomp reads the policy from the environment once, when it loads,
// before main() runs, so the only way to set it from inside is to set the variable and
// execute the program again. Call first thing in main(); returns (without re-executing) if
// the user chose a policy, if it is already set, or if re-executing fails. Tools that follow
// a program's executable (valgrind without --trace-children) lose it at the re-execution:
// set GOMP_SPINCOUNT yourself there.
void ShortenOpenMpSpin(char** argv);

// While it lives, LibTorch operations started on the constructing thread run on that thread
// alone, without OpenMP workers (OpenMP keeps its thread count per thread; other threads are
// not affected). For work that overlaps other work on the same cores: a second OpenMP team
// would only fight the first for them (docs/PERFORMANCE.md, the body's deferred step).
class SingleThreadedOperations {
 public:
  SingleThreadedOperations();
  ~SingleThreadedOperations();
  SingleThreadedOperations(const SingleThreadedOperations&) = delete;
  SingleThreadedOperations& operator=(const SingleThreadedOperations&) = delete;

 private:
  int previous_threads_;
};

}  // namespace splitfed
