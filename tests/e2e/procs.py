"""Start the suite's own processes, keep their output, and stop them again by PID."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

S = TypeVar("S", bound="Service")


class StartedProcess:
    """One long-running process this suite started; its output goes to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # A session of its own: a Ctrl-C meant for pytest must not kill daemons
            # before the fixtures stop them in order.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its status, or None."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum: int) -> None:
        if self.running():
            self._popen.send_signal(signum)

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        self.signal(signal.SIGTERM)
        if self.wait(grace) is None:
            self.signal(signal.SIGKILL)
            self._popen.wait()
        return self._popen.returncode

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} log={self.log}>"


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.25,
    watch: Sequence[StartedProcess] = (),
) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``.

    A process in ``watch`` that exits meanwhile ends the wait at once, with its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        for process in watch:
            if not process.running():
                raise RuntimeError(
                    f"{process.name} exited while waiting for {what}:\n{process.tail()}"
                )
        if time.monotonic() > deadline:
            details = "".join(f"\n--- {p.name} ({p.log}):\n{p.tail()}" for p in watch)
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{details}")
        time.sleep(interval)


class Service:
    """Something the suite brings up and takes down; ``with`` takes it down even when
    bringing it up failed half-way."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
