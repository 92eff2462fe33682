"""numba's parallel kernels on torch's thread count, leaving torch's as it was.

numba's OpenMP threading layer and torch share one OpenMP runtime (libgomp), and numba's
first parallel launch sets that runtime's thread count to the number of cores. A process
run with ``OMP_NUM_THREADS=1`` then trained on every core after its first evaluation: two
such processes sharing two cores (a validation curve beside its final run) ran their second
epoch about four times slower than their first. Every ``parallel=True`` kernel is therefore
called through :func:`torch_threads`: it runs on torch's thread count (the one budget a user
sets, with ``OMP_NUM_THREADS`` or ``torch.set_num_threads``) and puts torch's count back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numba
import torch


def torch_threads(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """``kernel`` (a numba ``parallel=True`` dispatcher) run on torch's thread count."""

    @functools.wraps(kernel)
    def run(*args: Any) -> Any:
        threads = torch.get_num_threads()
        # numba's count is per calling thread (the service's model thread has its own).
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            return kernel(*args)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return run
