"""Progress on the terminal: case i of N, its phase, elapsed time and an estimate of what is left.

On a TTY one line is redrawn in place; in a log (CI, a pipe) a line is printed per case start and end.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False):
        self.total, self.done, self.index = total, 0, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.t_run = time.monotonic()
        self.t_case = self.t_run
        self.label, self.phase = "", ""

    def _eta(self) -> str:
        if self.done == 0:
            return "?"
        per_case = (time.monotonic() - self.t_run) / self.done
        return _hms(per_case * (self.total - self.done))

    def _write(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            width = shutil.get_terminal_size().columns - 1  # a full-width line would wrap on some terminals
            self.stream.write("\r" + text[:width].ljust(width) + ("\n" if final else ""))
        elif final or not self.phase:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start_case(self, index: int, label: str) -> None:
        self.label, self.phase, self.t_case, self.index = label, "", time.monotonic(), index
        self._write(f"[{index}/{self.total}] {label} ...")

    def update(self, phase: str) -> None:
        self.phase = phase
        if self.tty:
            self.tick()

    def tick(self) -> None:
        if self.tty:
            self._write(f"[{self.index}/{self.total}] {self.label}  {self.phase}  "
                        f"case {_hms(time.monotonic() - self.t_case)}  run {_hms(time.monotonic() - self.t_run)}"
                        f"  left ~{self._eta()}")

    def end_case(self, summary: str) -> None:
        self.done += 1
        self.phase = ""
        self._write(f"[{self.index}/{self.total}] {self.label}  {summary}  "
                    f"({_hms(time.monotonic() - self.t_case)}; left ~{self._eta()})", final=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            if self.tty:
                self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            self.stream.write(text + "\n")
            self.stream.flush()
