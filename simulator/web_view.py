"""`hcp-sim device --web PORT`: the live screen of a sim device in a browser, where a click
is a touch (SPEC §10) and five keys press like the device's keys.

A small HTTP server on loopback (standard library only) follows the device's sim socket
(a SimClient) and serves:

- `GET /`            the page (it polls `/state` and reloads the picture when it changes);
- `GET /state`       the current screen as JSON: version, name, text, size, options with
                     their `box`, `qr`;
- `GET /screen.png`  the current frame as PNG (a colour PNG as the device sent it; the
                     OLED's 1-bit frame made a PNG);
- `POST /touch`      `{"x": X, "y": Y}` in screen pixels → the socket's touch op;
- `POST /press`      `{"level": N}` → a key press.

It listens on 127.0.0.1 only by default: whoever reaches it can rate.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from simulator.simclient import HEIGHT, WIDTH, SimClient

MAX_BODY = 1024

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>好差评评价器 · 实时屏幕</title>
<style>
 body { margin: 0; background: #20252b; color: #eee; font: 16px sans-serif; }
 main { display: flex; flex-direction: column; align-items: center; gap: 12px; padding: 16px; }
 #screen { max-width: min(96vw, 1024px); max-height: 80vh; cursor: pointer;
           image-rendering: pixelated; border: 6px solid #0b0d10; border-radius: 10px;
           background: #000; }
 #keys button { font-size: 18px; margin: 0 4px; padding: 6px 14px; }
 #text { white-space: pre-line; color: #bbb; text-align: center; }
</style></head>
<body data-screen="" data-version="-1"><main>
 <img id="screen" alt="screen" src="/screen.png?v=0">
 <div id="keys"><button data-level="5">5 非常满意</button><button data-level="4">4 满意</button>
 <button data-level="3">3 基本满意</button><button data-level="2">2 不满意</button>
 <button data-level="1">1 非常不满意</button></div>
 <div id="text"></div>
</main>
<script>
const img = document.getElementById("screen");
async function post(path, body) {
  await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                     body: JSON.stringify(body)});
}
img.addEventListener("click", (e) => {
  const r = img.getBoundingClientRect();
  const x = Math.floor((e.clientX - r.left - img.clientLeft) * img.naturalWidth / img.clientWidth);
  const y = Math.floor((e.clientY - r.top - img.clientTop) * img.naturalHeight / img.clientHeight);
  post("/touch", {x: x, y: y});
});
for (const b of document.querySelectorAll("#keys button")) {
  b.addEventListener("click", () => post("/press", {level: Number(b.dataset.level)}));
}
async function poll() {
  try {
    const s = await (await fetch("/state")).json();
    if (String(s.version) !== document.body.dataset.version) {
      await new Promise((done) => { img.onload = done; img.onerror = done;
                                    img.src = "/screen.png?v=" + s.version; });
      document.getElementById("text").textContent = s.text || "";
      document.body.dataset.screen = s.screen || "";
      document.body.dataset.version = String(s.version);
    }
  } catch (e) { /* the device restarts: try again */ }
  setTimeout(poll, 200);
}
poll();
</script></body></html>
"""


def frame_png(event: dict[str, Any] | None) -> bytes:
    """The frame of a screen event as PNG bytes (a black OLED before the first one)."""
    frame = event.get("frame") if event else None
    if isinstance(frame, str):
        try:
            data = base64.b64decode(frame, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if event and event.get("format") == "png" and data.startswith(b"\x89PNG"):
            return data
        if len(data) == WIDTH * HEIGHT // 8:
            out = io.BytesIO()
            Image.frombytes("1", (WIDTH, HEIGHT), data).save(out, format="PNG")
            return out.getvalue()
    out = io.BytesIO()
    Image.new("1", (WIDTH, HEIGHT), 0).save(out, format="PNG")
    return out.getvalue()


class WebView:
    """The server; `client()` gives the device's SimClient (None while it restarts)."""

    def __init__(self, client: Callable[[], SimClient | None], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._event: dict[str, Any] | None = None
        self._version = 0
        self._png = frame_png(None)
        view = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # the terminal view is on the same tty

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", PAGE.encode())
                elif path == "/state":
                    self._send(200, "application/json", json.dumps(
                        view.state(), ensure_ascii=False).encode())
                elif path == "/screen.png":
                    with view._lock:
                        png = view._png
                    self._send(200, "image/png", png)
                else:
                    self._send(404, "text/plain", b"not found")

            def do_POST(self) -> None:
                given = self.headers.get("Content-Length") or "0"
                length = int(given) if given.isascii() and given.isdigit() else 0
                if not 0 < length <= MAX_BODY:
                    self._send(400, "text/plain", b"a small JSON body is needed")
                    return
                try:
                    body = json.loads(self.rfile.read(length))
                    answer = view.act(self.path, body)
                except (ValueError, TypeError) as e:
                    self._send(400, "text/plain", str(e).encode())
                    return
                except RecursionError:
                    self._send(400, "text/plain", b"the body's JSON is nested too deeply")
                    return
                self._send(200 if answer else 503, "application/json",
                           json.dumps({"ok": answer}).encode())

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="web-view", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def on_event(self, event: dict[str, Any]) -> None:
        """A SimClient listener: keep the latest screen (PNG made here, once)."""
        if event.get("ev") != "screen":
            return
        png = frame_png(event)
        with self._lock:
            self._event, self._png = event, png
            self._version += 1

    def state(self) -> dict[str, Any]:
        with self._lock:
            e, version = self._event or {}, self._version
        return {"version": version, "screen": e.get("screen"), "text": e.get("text", ""),
                "width": e.get("width", WIDTH), "height": e.get("height", HEIGHT),
                "options": e.get("options", []), "qr": e.get("qr"),
                "case_id": e.get("case_id")}

    def act(self, path: str, body: Any) -> bool:
        """Pass a click or a key on to the device; False when it is not connected."""
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        client = self._client()
        if path == "/touch":
            x, y = body.get("x"), body.get("y")
            if (not isinstance(x, int) or not isinstance(y, int) or isinstance(x, bool)
                    or isinstance(y, bool)):
                raise ValueError("x and y must be integers")
            if client is None or client.closed:
                return False
            client.touch(x, y)
            return True
        if path == "/press":
            level = body.get("level")
            if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 5:
                raise ValueError("level must be 1..5")
            if client is None or client.closed:
                return False
            client.press(level)
            return True
        raise ValueError(f"no such action {path[:40]!r}")
