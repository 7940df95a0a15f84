"""The WebSocket half of scripts/bench, run with the Python of the test venv
(websockets from $WARREN_CACHE/py-clients):

  ws_bench.py serve ADDR          an echo server (the origin of the row)
  ws_bench.py rtt ADDR HOST SECS  one client, connected to ADDR and asking for
                                  ws://HOST/: echo round trips of a 32-byte
                                  message, one at a time, for SECS seconds;
                                  prints {"rtt_per_s", "p50_ms", "p99_ms"}

Every reply is checked byte for byte: a proxy that corrupts or drops a
message stops the benchmark instead of timing it.
"""

import asyncio
import json
import os
import statistics
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def run_server(addr):
    host, port = addr.rsplit(":", 1)
    async with serve(echo, host, int(port), compression=None, max_size=None):
        await asyncio.get_running_loop().create_future()


async def run_client(addr, host, seconds):
    payload = os.urandom(32)
    times = []
    ip, port = addr.rsplit(":", 1)
    # The URI names the virtual host (its Host header); the socket goes to ADDR.
    async with connect(f"ws://{host}/", host=ip, port=int(port), compression=None,
                       proxy=None, open_timeout=10) as ws:
        # Warm up the path (connection pools, first-packet costs) unmeasured.
        for _ in range(100):
            await ws.send(payload)
            await ws.recv()
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            await ws.send(payload)
            got = await ws.recv()
            times.append(time.perf_counter() - start)
            if got != payload:
                sys.exit(f"echo mismatch after {len(times)} round trips")
    times.sort()
    print(json.dumps({
        "rtt_per_s": len(times) / sum(times),
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[int(len(times) * 0.99)] * 1e3,
    }))


def main():
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 3:
        asyncio.run(run_server(sys.argv[2]))
    elif sys.argv[1:2] == ["rtt"] and len(sys.argv) == 5:
        asyncio.run(run_client(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
