#include "process/allocator.h"

#include <malloc.h>

namespace splitfed {

void KeepTrainingBuffersInHeap() {
  // 1 GiB: larger single buffers than that are rare enough to map directly.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace splitfed
