"""The driver's MLflow writes, sent in order by one thread so that training never waits for
tracking (issue 9: "a tracking outage loses nothing, duplicates nothing").

Tune calls its callbacks on the driver's event loop; a callback blocked in MLflow's retry
back-off stalls every trial. `MlflowTrackingCallback` therefore only queues its writes here. The
sender runs them one at a time, first in first out; a write that fails (server down, database
locked) is retried after a short wait until it succeeds, so the order holds and nothing is skipped.
Re-sending is harmless: reports carry the timestamp their worker stamped, so a write that reached
the server before its answer was lost stores identical rows (ignored), and `scalelab.logged_step`
skips steps already stored. While MLflow is unreachable the reports also stay in each trial's
journal (`reports.jsonl`): a driver that dies meanwhile loses nothing either; a rerun replays them.

After `grace_s` of continuous failure the outbox is `expired`: the runner stops the sweep and
exits 1 saying that a rerun sends the rest.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from typing import Callable

from .uri_auth import redact

GRACE_ENV = "SCALELAB_TRACKING_GRACE"
DEFAULT_GRACE_S = 1800.0
# MLflow's own HTTP retries while a `scalelab run` is on (our sender retries for as long as the
# grace allows): a call to a dead server gives up in seconds instead of minutes.
RUN_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RETRY_WAIT_S = (0.5, 5.0)  # first and longest wait between two tries of a failed write
NOTE_EVERY_S = 60.0        # while down, a progress line this often even if no trial reports

REFUSED_TRIES = 3          # a write the server refuses (HTTP 4xx) this often in a row is dropped

_REGISTRY: dict[int, "Outbox"] = {}
_KEYS = itertools.count(1)


def grace_seconds(flag: float | None = None) -> float:
    """--tracking-grace, else $SCALELAB_TRACKING_GRACE, else 30 minutes."""
    if flag is not None:
        return float(flag)
    return float(os.environ.get(GRACE_ENV) or DEFAULT_GRACE_S)


def _refused(err: Exception) -> bool:
    """A definite answer from the server (HTTP 4xx) rather than an outage."""
    try:
        status = err.get_http_status_code()  # MlflowException
    except Exception:  # noqa: BLE001 - not an MlflowException: treat as an outage
        return False
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def _registered(key: int) -> "Outbox":
    return _REGISTRY[key]


class Outbox:
    """FIFO of MLflow writes and the thread that sends them.

    Tune pickles and copies its callbacks; an Outbox pickles to its key, so every copy made in
    this process is this same object (threads and locks do not travel)."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S, on_change: Callable[[str], None] | None = None):
        self.grace_s, self.on_change = grace_s, on_change
        self.key = next(_KEYS)
        _REGISTRY[self.key] = self
        self._items: deque = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.down_since: float | None = None
        self.last_error = ""
        self.expired = False
        self.sent = 0

    def __reduce__(self):
        return (_registered, (self.key,))

    # --- the queue ---
    def put(self, fn: Callable[[], object]) -> None:
        with self._cv:
            self._items.append(fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scalelab-mlflow-sender", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        return len(self._items)

    def _loop(self) -> None:
        wait, last_note, refused = RETRY_WAIT_S[0], 0.0, 0
        while True:
            with self._cv:
                while not self._items:
                    self._cv.wait()
                fn = self._items[0]
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - any failure: keep the write, try again
                refused = refused + 1 if _refused(err) else 0
                if refused >= REFUSED_TRIES:  # the server answers "no" (4xx): retrying cannot help
                    self.tell(f"warning: MLflow refused a write {refused} times, skipped it: {err}")
                    refused = 0
                    with self._cv:
                        self._items.popleft()
                        self._cv.notify_all()
                    continue
                now = time.time()
                self.last_error = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
                if self.down_since is None:
                    self.down_since, last_note = now, now
                    self.tell(self.note())
                elif now - last_note >= NOTE_EVERY_S:
                    last_note = now
                    self.tell(self.note())
                if now - self.down_since >= self.grace_s and not self.expired:
                    self.expired = True
                    with self._cv:
                        self._cv.notify_all()
                time.sleep(wait)
                wait = min(wait * 2, RETRY_WAIT_S[1])
                continue
            wait = RETRY_WAIT_S[0]
            with self._cv:
                self._items.popleft()
                self.sent += 1
                back = self.down_since is not None
                self.down_since = None
                self._cv.notify_all()
            if back:
                self.tell(f"MLflow reachable again; sending {self.pending} queued report(s)")

    def tell(self, text: str) -> None:
        if self.on_change and text:
            try:
                self.on_change(text)
            except Exception:  # noqa: BLE001 - a progress line is never worth the sender
                pass

    def note(self) -> str:
        """For the progress line: empty while MLflow answers."""
        if self.down_since is None:
            return ""
        since = time.strftime("%H:%M:%S", time.localtime(self.down_since))
        return f"MLflow unreachable since {since}, {self.pending} reports queued"

    def drain(self, tick: Callable[[str], None] | None = None, every_s: float = NOTE_EVERY_S) -> bool:
        """Wait until everything is sent (True) or the grace period ran out (False)."""
        last = time.time()
        with self._cv:
            while self._items and not self.expired:
                self._cv.wait(timeout=1.0)
                if tick and self.down_since is not None and time.time() - last >= every_s:
                    last = time.time()
                    tick(self.note())
        return not self._items

    def close(self) -> None:
        _REGISTRY.pop(self.key, None)


def outage_message(outbox: Outbox, tracking_uri: str) -> str:
    minutes = outbox.grace_s / 60
    return (f"MLflow at {redact(tracking_uri)} unreachable for more than {minutes:g} min (last error: "
            f"{outbox.last_error}); the sweep stopped with {outbox.pending} report(s) not sent. Nothing "
            "is lost: every report is in its trial's journal and every trial resumes from its checkpoint; "
            "run the same command again once MLflow is back and it sends the rest "
            f"(--tracking-grace / ${GRACE_ENV} sets how long to wait)")
