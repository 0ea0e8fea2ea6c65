"""Coded arrays remembered by content, so that one run codes each distinct tensor once.

A candidate is coded to size it, then coded again when the bitstream is written, and a size
search writes a bitstream every round, most of it unchanged. Coding is a pure function of the
array's values, dtype and shape, so its result is kept under a digest of them, within a byte
budget (oldest out first).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

#: Coded bytes kept at most, over all kinds: room for every candidate of a model of some 100 MB
#: (MiniLM's overflowed 256 MiB, and the frontier coded the evicted ones again for every plan
#: it sized), and less than the candidates' own uncoded symbols hold.
LIMIT_BYTES = 1 << 30

_items: OrderedDict[tuple, bytes] = OrderedDict()
_used = 0
_lock = threading.Lock()  # candidates may be made on several threads


def memoized(kind: str, arr: np.ndarray, code: Callable[[np.ndarray], bytes]) -> bytes:
    """``code(arr)``, or what it returned before for an equal array (``arr`` C-contiguous)."""
    global _used
    key = (kind, hashlib.sha1(arr.tobytes() if arr.ndim == 0 else arr.reshape(-1).view(np.uint8)).digest(),
           arr.dtype.str, arr.shape)
    with _lock:
        coded = _items.get(key)
    if coded is None:
        coded = code(arr)
        with _lock:
            if key not in _items:
                _items[key] = coded
                _used += len(coded)
            while _used > LIMIT_BYTES and _items:
                _used -= len(_items.popitem(last=False)[1])
    return coded


def clear() -> None:
    """Forget every coded tensor (a timing that must code from scratch)."""
    global _used
    with _lock:
        _items.clear()
        _used = 0
