"""Copying SQLite's write-ahead log back into the database file, off the request path.

By default the writer whose commit takes the log past a threshold does that copy
(and its fsyncs) inside its own commit, so every few dozen writes one request
waits several milliseconds. Here a thread with its own connection does it a few
times a second instead; the SQLite library releases the interpreter lock while
it works, so it runs on another core. Writers keep a much higher threshold of
their own as a backstop should this thread fall behind. Every gateway process on
the file runs one; when two try at once, one finds the checkpoint lock taken and
skips that round.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("pathway")
WRITER_CHECKPOINT_PAGES = 10_000  # the writers' own threshold (about 40 MB of log)
INTERVAL_SECONDS = 0.05


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``database`` every ``interval`` seconds;
    a passive checkpoint never waits for readers or writers."""

    def __init__(self, database: Path, interval: float = INTERVAL_SECONDS) -> None:
        self.database, self.interval = database, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pathway-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self.database, timeout=0, check_same_thread=False, isolation_level=None)
        try:
            while not self._stop.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as problem:  # e.g. busy with another process's checkpoint
                    log.debug("WAL checkpoint skipped: %s", problem)
        finally:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
