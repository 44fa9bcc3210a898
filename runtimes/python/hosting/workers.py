"""Threads that drain workspaces' run queues, kept between runs: starting a thread per run costs more
(about 0.1 ms) than the run's own trip into its interpreter. Runs of different workspaces go on in
parallel, so a job never waits for a busy thread: with none idle, a new one starts."""

import queue
import threading
from collections.abc import Callable
from typing import Any

IDLE_S = 30.0  # an idle thread leaves after this: its stack counts against the kernel's address space


class Workers:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0  # threads waiting for a job that no submitted job has been promised to

    def submit(self, job: Callable[[Any], None], argument: Any) -> None:
        """Run `job(argument)` on an idle thread, or a new one (RuntimeError: no thread to be had)."""
        with self.lock:
            promised = self.idle > 0
            if promised:
                self.idle -= 1
        if not promised:
            threading.Thread(target=self.work, args=(job, argument), daemon=True).start()
            return
        self.jobs.put((job, argument))

    def work(self, job: Callable[[Any], None], argument: Any) -> None:
        while True:
            job(argument)
            with self.lock:
                self.idle += 1
            while True:
                try:
                    job, argument = self.jobs.get(timeout=IDLE_S)
                    break
                except queue.Empty:
                    with self.lock:
                        if self.idle > 0:  # no job is on its way to this thread: it may leave
                            self.idle -= 1
                            return
