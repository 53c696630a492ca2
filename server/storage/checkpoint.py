"""SQLite's WAL checkpoints, run on a thread of their own.

By default SQLite checkpoints inside the commit that takes the WAL past
1000 pages: that commit copies the pages into the database file (and, with
synchronous NORMAL or FULL, fsyncs both files) while the event loop waits
on it. Measured on a lone SendMessage, one commit in a hundred took 5 to 6 ms
instead of 0.1 ms, and those commits were about 30 % of all commit time.

Here a thread with its own connection runs a PASSIVE checkpoint every
CHECKPOINT_EVERY_S: it never waits for readers or the writer, and sqlite3
lets go of the GIL while it copies, so the loop carries on beside it. The
writer starts the WAL from its beginning again once a checkpoint has caught
up, so the file stays small. The store's own connections keep an automatic
checkpoint at BACKSTOP_PAGES, far above what the thread lets build up, in
case the thread falls behind or fails.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.1
BACKSTOP_PAGES = 20_000


class Checkpointer:
    def __init__(self, path: str, every: float = CHECKPOINT_EVERY_S) -> None:
        self._path = path
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._failing = False
        self.checkpoints = 0  # completed ones; read by tests

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it; a checkpoint under way finishes first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._every):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                    if self._failing:
                        log.info("SQLite checkpoints work again")
                        self._failing = False
                except sqlite3.Error as error:
                    # A full disk, say: the backstop still bounds the WAL, and
                    # the next tick tries again on a fresh connection.
                    if not self._failing:
                        log.warning("SQLite checkpoint failed: %s", error)
                        self._failing = True
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()
