"""WebSocket client for tests/tests/websocket.rs. Prints one JSON line with
the outcome and exits 0 when the check passed, 1 when it failed.

Usage:
  ws_client.py echo URL SEED COUNT
      COUNT messages of random sizes (log-uniform between 1 byte and 1 MiB,
      so the run stays bounded: the mean is ~75 KiB) and random type (text
      or binary), from a generator seeded with SEED; up to 16 in flight;
      each echo is compared byte for byte with what was sent.
  idle URL SECONDS
      one echo, SECONDS without a byte (pings off), then another echo.
  client-close URL
      connects, closes, and prints when the close started and when the
      closing handshake and TCP close were done.
  origin-close URL
      asks the origin (/close-me) to close, and prints when the close
      reached the client.
  many URL N
      opens N WebSockets at once, prints {"open": N}, waits for a line on
      stdin, then has each echo a message and closes them all.
  status URL
      expects the upgrade to be refused; prints the HTTP status and body.

The environment variable WS_CONNECT=HOST:PORT sends the TCP connection
there (the edge) while the URL's host stays the Host header.
"""

import asyncio
import json
import math
import os
import random
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

MAX = 1024 * 1024
TEXT = bytes(range(32, 127)) * 3
TABLE = bytes(TEXT[i % len(TEXT)] for i in range(256))


def out(ok, **fields):
    print(json.dumps(dict(ok=ok, **fields)), flush=True)
    sys.exit(0 if ok else 1)


def opts():
    # No permessage-deflate: random bytes do not compress, and deflating
    # ~700 MB would dominate the run.
    o = dict(max_size=2 * MAX, ping_interval=None, open_timeout=10, close_timeout=10,
             compression=None)
    # The URL names the tunnel's hostname (the Host header); WS_CONNECT is
    # where the TCP connection goes (the edge).
    target = os.environ.get("WS_CONNECT")
    if target:
        host, port = target.rsplit(":", 1)
        o.update(host=host, port=int(port))
    return o


def message(rng):
    size = min(MAX, int(math.exp(rng.uniform(0, math.log(MAX + 1)))))
    size = max(1, size)
    data = rng.randbytes(size)
    if rng.random() < 0.5:
        return data.translate(TABLE).decode("ascii")
    return data


async def echo(url, seed, count):
    rng = random.Random(seed)
    pending = asyncio.Queue(maxsize=16)
    total = 0
    async with connect(url, **opts()) as ws:
        async def sender():
            nonlocal total
            for i in range(count):
                m = message(rng)
                total += len(m)
                await pending.put((i, m))
                await ws.send(m)

        task = asyncio.create_task(sender())
        for _ in range(count):
            i, want = await pending.get()
            got = await ws.recv()
            if type(got) is not type(want) or got != want:
                task.cancel()
                out(False, seed=seed, index=i, sent_len=len(want), got_len=len(got),
                    sent_type=type(want).__name__, got_type=type(got).__name__)
        await task
    out(True, messages=count, bytes=total)


async def idle(url, seconds):
    async with connect(url, **opts()) as ws:
        await ws.send("before")
        if await ws.recv() != "before":
            out(False, stage="before")
        await asyncio.sleep(seconds)
        await ws.send("after idle")
        got = await asyncio.wait_for(ws.recv(), 10)
        out(got == "after idle", got=got)


async def client_close(url):
    ws = await connect(url, **opts())
    await ws.send("hello")
    started = time.time()
    await ws.close()
    out(True, close_started=started, closed=time.time())


async def origin_close(url):
    async with connect(url, **opts()) as ws:
        asked = time.time()
        await ws.send("close")
        await ws.wait_closed()
        out(True, asked=asked, closed=time.time(), code=ws.close_code)


async def many(url, n):
    socks = await asyncio.gather(*(connect(url, **opts()) for _ in range(n)))
    print(json.dumps({"open": len(socks)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def one(i, ws):
        await ws.send(f"socket {i}")
        return await ws.recv() == f"socket {i}"

    echoed = await asyncio.gather(*(one(i, ws) for i, ws in enumerate(socks)))
    await asyncio.gather(*(ws.close() for ws in socks))
    out(all(echoed), echoed=sum(echoed))


async def status(url):
    try:
        async with connect(url, **opts()):
            out(False, error="the upgrade was accepted")
    except InvalidStatus as e:
        r = e.response
        out(True, status=r.status_code, body=r.body.decode("utf-8", "replace"))


def main():
    mode, url, *rest = sys.argv[1:]
    if mode == "echo":
        run = echo(url, int(rest[0]), int(rest[1]))
    elif mode == "idle":
        run = idle(url, float(rest[0]))
    elif mode == "client-close":
        run = client_close(url)
    elif mode == "origin-close":
        run = origin_close(url)
    elif mode == "many":
        run = many(url, int(rest[0]))
    elif mode == "status":
        run = status(url)
    else:
        sys.exit(f"unknown mode {mode}")
    asyncio.run(run)


if __name__ == "__main__":
    main()
