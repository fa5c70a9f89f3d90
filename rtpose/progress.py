"""A small progress bar on stderr: redrawn in place on a terminal, a line per 10 % in a log."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, label: str, unit: str = "it", stream=None) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.status = ""
        self.started = time.perf_counter()
        self._tty = self.stream.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1

    def update(self, n: int = 1, status: str = "") -> None:
        self.done += n
        self.status = status or self.status
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw > 0.1 or self.done == self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line() + "\x1b[K")
                self.stream.flush()
        elif self.total:
            tenth = 10 * self.done // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def callback(self):
        """A ``progress(done, total)`` function for code that reports counts, closing at the end."""
        def step(done: int, total: int) -> None:
            self.update(done - self.done)
            if done == total:
                self.close()
        return step

    def close(self) -> None:
        if self._tty:
            self.stream.write("\r" + self._line() + "\x1b[K\n")
            self.stream.flush()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            width = 24
            filled = int(width * min(self.done / self.total, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            text = f"{self.label} [{bar}] {self.done}/{self.total} {rate:.1f} {self.unit}/s eta {left:.0f}s"
        else:
            text = f"{self.label} {self.done} {self.unit} {rate:.1f} {self.unit}/s"
        return f"{text} {self.status}".rstrip()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
