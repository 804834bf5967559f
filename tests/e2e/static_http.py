"""A static HTTP server for the boot tree that logs ``METHOD PATH STATUS`` per request.

Run as a script inside the test namespace:
``static_http.py ADDRESS PORT ROOT LOG``. Stands in for the generated nginx config
until the publish stage provides one; the log format is the same contract.
"""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO


class LoggingHandler(SimpleHTTPRequestHandler):
    """Serves files under the root; writes one flushed line per request to the log."""

    access_log: TextIO

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = getattr(code, "value", code)
        self.access_log.write(f"{self.command} {self.path} {status}\n")
        self.access_log.flush()

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(address: str, port: str, root: str, log: str) -> None:
    with open(log, "a", buffering=1) as access_log:
        LoggingHandler.access_log = access_log
        handler = functools.partial(LoggingHandler, directory=root)
        with ThreadingHTTPServer((address, int(port)), handler) as server:
            server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
