"""Automatic garbage collection paused while a large catalog is read.

Reading a 36 MB catalog allocates millions of objects, and each allocation burst triggers a full collection
that walks every live object with the GIL held: measured, pauses of ~1 s in which the event loop (another
thread) cannot run, parse off the loop or not. Reference counting still frees everything that is not a
cycle; the collector runs again when the last large intake ends. Process-wide, so it is counted.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
