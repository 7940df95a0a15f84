"""An independent WebSocket peer (the `websockets` library) for the access
path, so Warren's own framing is checked against someone else's, not only
against itself. Prints one JSON line and exits 0 when the check passed.

Usage:
  ws_tcp_peer.py client URL CONNECT HOST:PORT
      Opens URL with the `warren-tcp` subprotocol, TCP to CONNECT (the
      edge), Host from the URL. Sends 64 binary messages of 1..64 KiB and
      one text message, reads the echo back as one byte stream, pings, then
      closes; the origin's trailer after the client's Close must arrive
      before the edge's Close (Close is a half-close in warren-tcp).
  server LISTEN_HOST LISTEN_PORT
      Serves `warren-tcp` WebSockets (standing in for an edge, to check
      `connector access`): echoes every byte, answers the client's Close.
      Prints {"listening": true} first.
"""

import asyncio
import json
import random
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

SUBPROTOCOL = "warren-tcp"


async def client(url, edge):
    host, port = edge.rsplit(":", 1)
    rng = random.Random(12)
    t0 = time.monotonic()
    marks = {}
    sent = bytearray()
    async with connect(
        url, host=host, port=int(port), subprotocols=[SUBPROTOCOL],
        ping_interval=None, max_size=None, compression=None,
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL, ws.subprotocol
        for _ in range(64):
            chunk = rng.randbytes(rng.randint(1, 64 * 1024))
            sent += chunk
            await ws.send(chunk)
        text = "text frames are bytes too"
        sent += text.encode()
        await ws.send(text)
        got = bytearray()
        while len(got) < len(sent):
            msg = await ws.recv()
            got += msg if isinstance(msg, bytes) else msg.encode()
        marks["echoed"] = round(time.monotonic() - t0, 3)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        # Close = "no more data from me": the echo origin answers with its
        # trailer, which comes before the edge's Close.
        await ws.send(b"")
        close = asyncio.ensure_future(ws.close())
        trailer = bytearray()
        try:
            async for msg in ws:
                trailer += msg if isinstance(msg, bytes) else msg.encode()
        except ConnectionClosed:
            pass
        await close
        marks["closed"] = round(time.monotonic() - t0, 3)
        ok = bytes(got) == bytes(sent) and ws.close_code == 1000 and trailer == b"<bye>"
        print(json.dumps({
            "ok": ok, "bytes": len(sent), "echoed_equal": bytes(got) == bytes(sent),
            "close_code": ws.close_code, "seconds": marks, "trailer": trailer.decode(errors="replace"),
        }), flush=True)
        return 0 if ok else 1


async def server(host, port):
    async def echo(ws):
        if ws.subprotocol != SUBPROTOCOL:
            await ws.close(1002, "subprotocol")
            return
        try:
            async for msg in ws:
                await ws.send(msg if isinstance(msg, bytes) else msg.encode())
        except ConnectionClosed:
            pass

    async with serve(echo, host, int(port), subprotocols=[SUBPROTOCOL],
                     max_size=None, compression=None):
        print(json.dumps({"listening": True}), flush=True)
        await asyncio.Future()


def main():
    mode = sys.argv[1]
    if mode == "client":
        sys.exit(asyncio.run(client(sys.argv[2], sys.argv[3])))
    if mode == "server":
        asyncio.run(server(sys.argv[2], sys.argv[3]))
        return
    print(f"unknown mode {mode}", file=sys.stderr)
    sys.exit(64)


if __name__ == "__main__":
    main()
