// How long OpenMP's idle workers busy-wait before sleeping, for the whole process.
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

}  // namespace splitfed
