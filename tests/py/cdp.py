"""Drives one Chromium page over the DevTools protocol, for
tests/src/chromium.rs.

Usage: cdp.py WS_URL   (the page's webSocketDebuggerUrl)

Reads one JSON command per line on stdin and answers each with one JSON line
on stdout:
  {"goto": url}                        -> {"ok": true} once the page loaded
  {"eval": js}                         -> {"value": ...} (promises awaited)
  {"wait": js, "timeout": seconds}     -> {"ok": true} once js is truthy
  {"prompt_answer": text}              -> {"ok": true}; every later
                                          window.prompt is answered with text
  {"screenshot": path}                 -> {"ok": true, "bytes": n} (PNG)
Any failure is {"error": "..."}; tracebacks go to stderr, never to stdout.
The prompt answer (a token, in the tests) is never printed.
"""

import asyncio
import base64
import json
import sys
import traceback

from websockets.asyncio.client import connect


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending = {}
        self.loaded = asyncio.Event()
        self.prompt_answer = None

    async def call(self, method, **params):
        self.next_id += 1
        done = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = done
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await done
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def read(self):
        """Routes answers to their callers and handles the events."""
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                done = self.pending.pop(msg["id"], None)
                if done and not done.done():
                    done.set_result(msg)
            elif msg.get("method") == "Page.loadEventFired":
                self.loaded.set()
            elif msg.get("method") == "Page.javascriptDialogOpening":
                asyncio.create_task(self.dialog(msg["params"]))
        for done in self.pending.values():
            if not done.done():
                done.set_exception(RuntimeError("the browser closed the DevTools connection"))

    async def dialog(self, params):
        # A prompt without an answer is dismissed (window.prompt returns
        # null), so the page never hangs on it; other dialogs are accepted.
        if params.get("type") == "prompt":
            accept = self.prompt_answer is not None
            text = self.prompt_answer or ""
        else:
            accept, text = True, ""
        await self.call("Page.handleJavaScriptDialog", accept=accept, promptText=text)

    async def evaluate(self, js):
        r = await self.call(
            "Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            ex = r["exceptionDetails"]
            text = ex.get("exception", {}).get("description") or ex.get("text")
            raise RuntimeError(f"evaluating {js!r}: {text}")
        return r.get("result", {}).get("value")

    async def run(self, cmd):
        if "goto" in cmd:
            self.loaded.clear()
            r = await self.call("Page.navigate", url=cmd["goto"])
            if r.get("errorText"):
                raise RuntimeError(f"navigating to {cmd['goto']}: {r['errorText']}")
            await asyncio.wait_for(self.loaded.wait(), cmd.get("timeout", 30))
            return {"ok": True}
        if "eval" in cmd:
            return {"value": await self.evaluate(cmd["eval"])}
        if "wait" in cmd:
            return await self.wait(cmd["wait"], cmd.get("timeout", 10))
        if "prompt_answer" in cmd:
            self.prompt_answer = cmd["prompt_answer"]
            return {"ok": True}
        if "screenshot" in cmd:
            r = await self.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(r["data"])
            with open(cmd["screenshot"], "wb") as f:
                f.write(png)
            return {"ok": True, "bytes": len(png)}
        raise RuntimeError(f"unknown command; expected goto, eval, wait, prompt_answer or screenshot: {sorted(cmd)}")

    async def wait(self, js, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = None
        while True:
            try:
                if await self.evaluate(f"Boolean({js})"):
                    return {"ok": True}
                last = "false"
            except RuntimeError as e:
                last = str(e)
            if loop.time() >= deadline:
                return {"error": f"timed out after {timeout}s waiting for {js} (last: {last})"}
            await asyncio.sleep(0.1)


async def main(url):
    async with connect(url, max_size=None, ping_interval=None) as ws:
        page = Page(ws)
        reader = asyncio.create_task(page.read())
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            try:
                answer = await page.run(json.loads(line))
            except Exception as e:  # every failure is an answer, not a crash
                traceback.print_exc(file=sys.stderr)
                answer = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(answer), flush=True)
        reader.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1]))
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"error": f"DevTools connection failed: {e}"}), flush=True)
        sys.exit(1)
