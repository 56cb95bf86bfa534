"""Process and CPU settings: OpenMP wait policy, malloc, torch's thread count, free cores, device and dtype.

torch is imported inside the functions that use it: `training_process_settings` must run before torch
loads, and the TUI imports this module on its first-frame path. Measurements behind each setting:
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import ConfigError


def training_process_settings() -> None:
    """Call before torch is imported in a process that trains (a user's own settings win).

    - Idle OpenMP threads spin ~20 us (GOMP_SPINCOUNT=2000) before they sleep: the gaps between a
      training step's ops are shorter, so a sleeping second thread would be woken at nearly every op.
    - glibc's malloc keeps freed blocks up to 32 MB and never trims the heap, so each step's activations
      are not page-faulted in afresh. Nothing happens where the C library has no mallopt (macOS, musl).
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "2000"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def share_cpu() -> None:
    """Tune a process that runs models beside other work before its first model runs (idempotent): the
    TUI, its decode process, `smallgpt generate` and `smallgpt chat`.

    - torch's threads capped at cores - 1: with every core in torch's spinning pool, the UI thread (and
      any training process) starves; and a prefill on every core stalls on the one a training run holds
      (the sampler re-prefills its window every block of tokens: 142-316 tok/s on 2 threads beside a
      training run on 2 cores, 816-839 on 1).
    - a 0.5 ms GIL switch interval (default 5 ms): each torch op releases the GIL and must win it back
      from the busy UI thread, waiting up to a whole interval each time.
    """
    import torch

    global _shared
    if _shared:
        return
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    sys.setswitchinterval(0.0005)
    _shared = True


_shared = False


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Inside: torch's thread count set to n (unchanged when None). On exit: back to what it was."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FreeCores:
    """How many threads a training process can use without crowding other processes: the cores it may
    run on, less the cores everything else used since the last look (Linux /proc/stat), capped at the
    thread count it started with. Threads that wait at every op for one that lost its core make each
    step slower than fewer threads would."""

    def __init__(self, threads: int):
        self.max_threads = threads
        self.others = 0.0  # cores the rest of the machine used over the last look
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall s, CPU s the machine's processes used, CPU s this process used); None without /proc/stat."""
        try:
            with open("/proc/stat") as f:
                user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
        except (OSError, ValueError):
            return None
        ours = os.times()
        return (time.monotonic(), (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"),
                ours.user + ours.system)

    def threads(self) -> int | None:
        """The thread count for what comes next; None when it cannot tell yet (under a second since the
        last look) or at all (no /proc/stat)."""
        now = self._sample()
        if now is None or self._last is None or now[0] - self._last[0] < 1.0:
            return None
        (wall0, busy0, ours0), (wall1, busy1, ours1) = self._last, now
        self._last = now
        self.others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (wall1 - wall0)
        return max(1, min(self.max_threads, math.floor(self.cores - self.others + 0.5)))


def pick_device(requested: str) -> str:
    """"auto": cuda, else mps, else cpu; an explicit device that is not there is a ConfigError."""
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA GPU is available: use --device auto or cpu.")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("train.device is mps but MPS is not available here: use --device auto or cpu.")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_bf16() -> bool:
    """Native bf16 math on this CPU (AVX512-BF16 or AMX): where bf16 autocast pays off."""
    import torch

    if "AMX" in torch.backends.cpu.get_cpu_capability():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def pick_dtype(requested: str, device: str) -> str:
    """"bf16" where the device has native bf16 (or it was asked for on a CPU), else "fp32"."""
    import torch

    if requested == "fp32":
        return "fp32"
    supported = (device == "cuda" and torch.cuda.is_bf16_supported()) or (device == "cpu" and cpu_has_bf16())
    if requested == "bf16" and not supported and device != "cpu":
        raise ConfigError(f"bf16 is not supported on {device} here: use --dtype auto or fp32.")
    # An explicit bf16 on a CPU without native bf16 still works (emulated), just slower: honour it.
    return "bf16" if supported or requested == "bf16" else "fp32"
