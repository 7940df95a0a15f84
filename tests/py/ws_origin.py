"""WebSocket echo origin for tests/tests/websocket.rs.

Usage: ws_origin.py HOST PORT

Paths:
  /echo           echoes every message as it came (text stays text, binary
                  stays binary)
  /watch/ID       reads until the client closes, then prints
                  {"event": "client_closed", "id": ID, "t": wall-clock time}
  /close-me       on the text message "close", prints
                  {"event": "origin_closing", "t": ...} and closes
  /plain200, /plain404
                  answers the upgrade request with a plain HTTP 200 / 404
                  (an origin that is no WebSocket server)

Prints {"event": "listening"} once it accepts connections. Every report is
one JSON line on stdout, flushed at once.
"""

import asyncio
import json
import sys
import time
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def report(**fields):
    print(json.dumps(fields), flush=True)


def plain_answers(connection, request):
    if request.path == "/plain200":
        return connection.respond(HTTPStatus.OK, "plain origin, no websocket here\n")
    if request.path == "/plain404":
        return connection.respond(HTTPStatus.NOT_FOUND, "no such page\n")
    return None


async def handler(ws):
    path = ws.request.path
    if path == "/echo":
        async for message in ws:
            await ws.send(message)
    elif path.startswith("/watch/"):
        ident = path[len("/watch/"):]
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        report(event="client_closed", id=ident, t=time.time())
    elif path == "/close-me":
        async for message in ws:
            if message == "close":
                report(event="origin_closing", t=time.time())
                await ws.close()
                return
    else:
        await ws.close(code=1008, reason="unknown path")


async def main():
    host, port = sys.argv[1], int(sys.argv[2])
    # Messages up to 1 MiB are tested: allow a little more than that.
    async with serve(
        handler,
        host,
        port,
        max_size=2 * 1024 * 1024,
        process_request=plain_answers,
        ping_interval=None,
        # Random test data does not compress: deflate would only cost time.
        compression=None,
    ):
        report(event="listening")
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
