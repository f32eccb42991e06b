"""One SQLite writer at a time, across the threads and processes of a gateway.

SQLite allows a single writer; a writer that finds the database locked sleeps
and polls (up to 100 ms a time), which gives long tails when several serving
processes write at once. Taking this lock first queues writers in the kernel
instead, so each starts as soon as the one before it commits.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriteLock:
    """A thread lock, plus an exclusive ``flock`` on ``<database>-writelock`` when the
    database is a file other processes may open."""

    def __init__(self, database: Path | None) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT, 0o600) if database else None

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
