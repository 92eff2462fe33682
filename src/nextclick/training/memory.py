"""How training uses the CPU's memory: allocator settings and page sizes for item tables."""

from __future__ import annotations

import ctypes
import functools
import platform

import torch
from torch import Tensor

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest block glibc's heap may serve (DEFAULT_MMAP_THRESHOLD_MAX on 64 bits).
_HEAP_BLOCK = 32 << 20
#: Free memory the heap may keep for reuse instead of returning it to the system.
_KEPT_FREE = 1 << 30


@functools.cache
def reuse_freed_blocks() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MB for the next step (process-wide,
    once; False where the C library is not glibc).

    A training step allocates and frees the same large tensors each time (an item table's
    gradients, a batch's logits: 17 MB each for SR-GNN on diginetica). By default glibc
    serves blocks that large with fresh mmap pages and unmaps them when freed, so every step
    pays the kernel to fault in and zero them again (README: SR-GNN's epoch on diginetica).
    This is what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc, without having to
    preload another allocator. Blocks above 32 MB (a million-item table) are still mapped.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCK)
                and libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_FREE))  # fmt: skip


#: Linux's madvise advice for transparent huge pages (mman-common.h), and their size on x86-64
#: and most arm64 kernels.
_MADV_HUGEPAGE = 14
_HUGE_PAGE = 2 << 20


def empty_table_like(like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor shaped like ``like`` for an item table (an embedding,
    its optimizer's accumulators) whose rows a training step reads and writes at random.

    Above glibc's heap block size the memory is marked for 2 MB pages on Linux, before this
    function touches it (it comes fresh from the kernel, or from free memory that
    ``reuse_freed_blocks`` lets the heap keep, whose pages then stay advised): a step's
    random rows over a million-item table (400 MB at 100 columns, three of them with
    Adagrad's accumulator and momentum) otherwise miss the TLB for nearly every row on 4 kB
    pages (docs/scaling.md: a million-item catalogue). Where transparent huge pages are off,
    or on other systems, the pages stay small and only speed differs.
    """
    table = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    size = table.numel() * table.element_size()
    if table.device.type != "cpu" or size <= _HEAP_BLOCK or platform.system() != "Linux":
        return table
    first = table.data_ptr()
    start = -(-first // _HUGE_PAGE) * _HUGE_PAGE
    stop = (first + size) // _HUGE_PAGE * _HUGE_PAGE
    ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start),
                              _MADV_HUGEPAGE)  # fmt: skip
    return table
