"""Keep freed host memory in the process for reuse while training on the CPU.

Why: a CPU training step allocates and frees the same large buffers every batch -- the
batch of views (256 x 3 x 224 x 224 float32 = 154 MB), the blur's groups, the model's
activations and gradients. glibc's malloc serves every allocation above its mmap threshold
(adaptive, at most 32 MB) with a fresh ``mmap`` and hands it back with ``munmap`` when it is
freed, and it trims the top of its heap back to the OS as soon as a little is free there.
Either way the next batch's buffers are new pages, and the kernel faults in and zeroes
every 4 KB of them again: on the project's machine that was a third of the time of the
224 px input pipeline (``bench/cpu_pipeline.py``, ``ours-malloc-as-is`` against ``ours``:
872 -> 1,362 views/s) and about 9 % of ResNet-18's own training step at 64 px
(model-only 309 -> 338 views/s with the same setting).

What: :func:`keep_freed_host_memory` raises malloc's mmap threshold to 1 GiB and its trim
threshold to 2 GiB (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``), so
freed buffers stay in the heap and the next batch reuses them. The price: the process
keeps up to 2 GiB of freed memory instead of returning it (resident memory stays near
the peak of the run; +200-250 MB peak on the 224 px pipeline benchmark). It is a setting
of the whole process and stays after ``fit`` returns: glibc cannot go back to its adaptive
thresholds once they were set. Linux with glibc only (elsewhere, and with
``FINETUNER_SELFSUP_MALLOC_TUNING=0``, nothing changes). DataLoader workers started by
``fork`` (Linux's default) inherit it. This is what PyTorch's CPU performance guides reach
for with ``LD_PRELOAD`` of jemalloc or tcmalloc, without changing how the process starts.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Any, Optional

from ..switches import switched_off

logger = logging.getLogger("finetuner_selfsup")

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: allocations up to this size come from malloc's heap, where freed memory is reused
MMAP_THRESHOLD_BYTES = 1 << 30
#: free memory at the top of the heap kept in the process up to this size (``mallopt``
#: takes an ``int``, so 2 GiB - 1 is the largest value)
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
#: environment switch: ``0`` / ``false`` / ``no`` / ``off`` leaves malloc as it is
ENV_SWITCH = "FINETUNER_SELFSUP_MALLOC_TUNING"

_applied_in_pid: Optional[int] = None


def _glibc() -> Optional[Any]:
    """The C library, if it is glibc and has ``mallopt``; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_host_memory(libc: Optional[Any] = None) -> bool:
    """Set malloc's thresholds (see the module docstring) once per process.

    :param libc: the C library to call (tests pass a stand-in); by default glibc's.
    :return: whether the setting is in effect in this process.
    """
    global _applied_in_pid
    if _applied_in_pid == os.getpid():
        return True
    if switched_off(ENV_SWITCH):
        return False
    libc = libc if libc is not None else _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    if not ok:
        logger.debug("mallopt refused the thresholds; malloc left with its own")
        return False
    _applied_in_pid = os.getpid()
    logger.info(
        "CPU training: freed buffers are kept in the process for reuse (malloc mmap threshold "
        "1 GiB, trim threshold 2 GiB); set %s=0 to leave malloc as it is", ENV_SWITCH,
    )
    return True
