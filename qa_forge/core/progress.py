"""Progress of a long loop: a rich bar on a terminal (stderr), else a plain line at every tenth and
at the end with items, rate and time left (what a log file or `dvc repro` piped to a file keeps:
rich's own bar prints nothing there until it stops)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A loop's progress: a rich bar on a terminal (stderr), else a plain line at every tenth and at
    the end (what a log file or `dvc repro` piped to a file keeps)."""

    def __init__(self, desc: str, total: int, enabled: bool = True):
        from rich.console import Console

        self.desc, self.total, self.enabled = desc, max(total, 0), enabled
        self.start = time.perf_counter()
        self.console = Console(stderr=True)
        self.bar = None
        self.finished = False
        self.every = max(1, -(-self.total // 10))
        self.next = self.every
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn(desc),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task(desc, total=self.total, info="")

    def update(self, done: int, info: str = "") -> None:
        if not self.enabled or self.finished:
            return
        self.finished = done >= self.total
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)
            if self.finished:  # one live display at a time: the next loop's bar may start
                self.close()
        elif done >= self.next or self.finished:
            self.next = (done // self.every + 1) * self.every
            elapsed = time.perf_counter() - self.start
            rate = done / max(elapsed, 1e-9)
            left = (self.total - done) / rate if rate > 0 else 0.0
            print(
                f"{self.desc} {done}/{self.total}  {rate:.2f}/s  {elapsed:.0f} s, ~{left:.0f} s left{'  ' + info if info else ''}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
