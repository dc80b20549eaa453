"""Broadcasting helpers shared by the public wrappers (kept cheap for small batches).

Kernels receive every input as a flat float64 (or bool) array of length n or
length 1; a length-1 array is broadcast inside the kernel (index 0 for every
row), which avoids materialising scalars such as ``r`` for every call.
"""

from __future__ import annotations

import numpy as np


def broadcast_flat(float_args, bool_arg):
    """Return (shape, flat float64 arrays, flat bool array) for numpy-broadcast inputs."""
    arrs = [np.asarray(a, dtype=np.float64) for a in float_args]
    arrs.append(np.asarray(bool_arg, dtype=np.bool_))
    shape = None
    simple = True
    max_ndim_1 = 0
    for a in arrs:
        if a.size == 1:
            if a.ndim > max_ndim_1:
                max_ndim_1 = a.ndim
        elif shape is None:
            shape = a.shape
        elif a.shape != shape:
            simple = False
            break
    if simple:
        if shape is None:  # every input has one element
            shape = (1,) * max_ndim_1
        elif max_ndim_1 > len(shape):
            simple = False
    if not simple:
        shape = np.broadcast_shapes(*(a.shape for a in arrs))
    flat = [_flat(a, shape) for a in arrs]
    return shape, flat[:-1], flat[-1]


def _flat(a: np.ndarray, shape) -> np.ndarray:
    if a.size == 1:
        return a.reshape(1)
    if a.shape != shape:
        a = np.ascontiguousarray(np.broadcast_to(a, shape))
    return a.reshape(-1)


def size_of(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
