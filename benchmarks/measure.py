"""Measuring helpers shared by the benchmark scripts: peak process memory of a block of code."""

import ctypes
import ctypes.util
import gc
import os
import threading

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_INTERVAL_S = 0.001
LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


class PeakAnonymousMemory:
    """Context manager: peak anonymous resident memory inside the block minus its value on entry, in `peak_bytes`.

    A background thread reads /proc/self/statm (resident minus shared pages, so library code pages touched for
    the first time do not count) about every millisecond. On entry it runs `gc.collect()` and `malloc_trim(0)`,
    which hands freed heap memory back to the OS so memory glibc kept from earlier calls does not hide the new
    call's use. It is process memory: allocator fragmentation counts.
    """

    def __enter__(self):
        gc.collect()
        LIBC.malloc_trim(0)
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self._baseline = self._peak = self._anonymous_bytes()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._sampler.join()
        self._peak = max(self._peak, self._anonymous_bytes())
        os.close(self._statm)
        self.peak_bytes = self._peak - self._baseline

    def _anonymous_bytes(self) -> int:
        resident, shared = os.pread(self._statm, 128, 0).split()[1:3]
        return (int(resident) - int(shared)) * PAGE_SIZE

    def _sample(self):
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._peak = max(self._peak, self._anonymous_bytes())


# mallopt options (glibc's M_* constants) and the values `keep_freed_memory` gives them.
KEPT_MEMORY_OPTIONS = {"M_MMAP_MAX": (-4, 0), "M_TRIM_THRESHOLD": (-1, 2**30), "M_TOP_PAD": (-2, 2**28)}
malloc_settings = []  # what `keep_freed_memory` set, for `environment_line`


def keep_freed_memory():
    """Have glibc's malloc serve every allocation from its heap and keep freed memory there for reuse.

    By default glibc gives blocks above its mmap threshold (at most 32 MB) fresh pages from the kernel on every
    allocation, which are faulted in and zeroed again at every training step. Tensors cross that size only at
    long sequences, so the default makes step time jump there; a caching allocator (PyTorch's on CUDA, or jemalloc /
    tcmalloc preloaded) has no such cost. Must run before the large allocations; recorded in `environment_line`.
    """
    for name, (option, value) in KEPT_MEMORY_OPTIONS.items():
        if LIBC.mallopt(option, value) != 1:
            raise RuntimeError(f"mallopt({name}, {value}) failed: is this glibc?")
        malloc_settings.append(f"mallopt {name}={value}")


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024


def environment_line() -> str:
    import sys

    import torch
    import transformers

    environment = sorted(os.environ.items())
    malloc = [f"{key}={value}" for key, value in environment if key.startswith(("MALLOC", "GLIBC_TUNABLES"))]
    malloc += malloc_settings
    return (
        f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}, malloc: {' '.join(malloc) or 'defaults'}"
    )
