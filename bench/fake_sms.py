"""The P5 loopback SMS provider: the test suite's FakeTwilio, plus bench counters.

FakeTwilio (tests/fakes/twilio.py) serves Twilio's Messages API with basic auth
and validation, as the hub's twilio adapter expects. This wrapper notes when
each message arrives and, when the Body starts with "bench:<ms>:" (the time the
bench client sent it, ms since the epoch), the accept-to-provider latency.

- GET  /bench/stats  -> {"count", "first_ms", "last_ms", "hist": {latency_ms: n}}
- GET  /bench/count  -> {"count"}
- POST /bench/reset  -> clears the counters (and the fake's own records)

Prints "fake-sms: listening on 127.0.0.1:PORT" once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.server import Recorded
from fakes.twilio import FakeTwilio


class BenchTwilio(FakeTwilio):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = 0
        self.first_ms = 0.0
        self.last_ms = 0.0
        self.hist: Counter[int] = Counter()
        self.app.router.add_get("/bench/stats", self._stats)
        self.app.router.add_get("/bench/count", self._count)
        self.app.router.add_post("/bench/reset", self._reset)

    async def record(self, request: web.Request) -> Recorded:
        rec = await super().record(request)
        now = time.time() * 1000.0
        # A long run must not keep every request; HAPPY never looks at them.
        self.requests.clear()
        if len(self.messages) > 10_000:
            self.messages.clear()
        body = rec.form.get("Body", "")
        self.count += 1
        self.first_ms = self.first_ms or now
        self.last_ms = now
        if body.startswith("bench:"):
            try:
                sent = float(body.split(":", 2)[1])
            except ValueError:
                pass
            else:
                self.hist[int(now - sent)] += 1
        return rec

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": self.count,
                "first_ms": self.first_ms,
                "last_ms": self.last_ms,
                "hist": {str(k): v for k, v in self.hist.items()},
            }
        )

    async def _count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count})

    async def _reset(self, request: web.Request) -> web.Response:
        self.count = 0
        self.first_ms = self.last_ms = 0.0
        self.hist.clear()
        self.messages.clear()
        return web.json_response({"ok": True})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="bench-auth-token")
    args = parser.parse_args()
    fake = BenchTwilio(account_sid=args.account_sid, auth_token=args.auth_token)
    await fake.start()
    print(f"fake-sms: listening on 127.0.0.1:{fake.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
