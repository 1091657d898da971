"""A headless Chromium driven over the DevTools protocol (stdlib only): renders a page, collects console
errors, network requests and SVG sizes, and takes a screenshot. The browser is started on 127.0.0.1 and
stopped (its whole process group) by the helper itself."""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: masked text frames out, whole messages in."""

    def __init__(self, url: str, timeout: float) -> None:
        host_port, path = url.split("://", 1)[1].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.buf = bytearray(rest)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> dict:
        message = b""
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            payload = self._take(n)
            if b0 & 0x0F == 8:
                raise ConnectionError("DevTools sent close")
            if b0 & 0x0F in (0x1, 0x2, 0x0):
                message += payload
                if b0 & 0x80:
                    return json.loads(message)


_PROBE = """JSON.stringify({
  title: document.title,
  svgs: Array.from(document.querySelectorAll('svg')).map(s => {
    const r = s.getBoundingClientRect();
    return {label: s.getAttribute('aria-label'), width: r.width, height: r.height,
            marks: s.querySelectorAll('path, rect, line, text, use').length};
  }),
  resources: performance.getEntriesByType('resource').map(e => e.name),
  text: document.body.innerText.length,
})"""


def render_in_chromium(html: Path, *, screenshot: Path | None = None, width: int = 1280,
                       max_height: int | None = None, timeout: float = 90.0) -> dict:
    """Open `html` in headless Chromium; return console errors, exceptions, requests and SVG boxes."""
    profile_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"es-chromium-{os.getpid()}-{time.monotonic_ns()}"
    profile_dir.mkdir()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
         "--hide-scrollbars", f"--user-data-dir={profile_dir}", "--remote-debugging-port=0",
         f"--window-size={width},900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        port_file = profile_dir / "DevToolsActivePort"
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        ws = _WebSocket(target["webSocketDebuggerUrl"], timeout=timeout)
        events: list[dict] = []
        counter = iter(range(1, 1 << 30))

        def call(method: str, **params) -> dict:
            ident = next(counter)
            ws.send({"id": ident, "method": method, "params": params})
            while True:
                assert time.monotonic() < deadline, f"timed out waiting for {method}"
                message = ws.recv()
                if message.get("id") == ident:
                    assert "error" not in message, message
                    return message["result"]
                events.append(message)

        for domain in ("Page", "Runtime", "Log", "Network"):
            call(f"{domain}.enable")
        call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        url = html.resolve().as_uri()
        call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            assert time.monotonic() < deadline, "the page did not finish loading"
            events.append(ws.recv())
        probe = json.loads(call("Runtime.evaluate", expression=_PROBE, returnByValue=True)["result"]["value"])
        if screenshot is not None:
            size = call("Page.getLayoutMetrics")["cssContentSize"]
            height = int(min(size["height"], max_height or size["height"]))
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.sock.close()
    finally:
        # SIGTERM to the browser's own process group (start_new_session): it reaps its children itself.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        shutil.rmtree(profile_dir, ignore_errors=True)
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    console = [" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"].get("args", []))
               for e in events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"].get("type") in ("error", "warning", "assert")]
    console += [e["params"]["entry"].get("text", "") for e in events if e.get("method") == "Log.entryAdded"
                and e["params"]["entry"].get("level") in ("error", "warning")]
    exceptions = [e["params"]["exceptionDetails"].get("text") for e in events
                  if e.get("method") == "Runtime.exceptionThrown"]
    return dict(probe, url=url, requests=requests, other_requests=[r for r in requests if r != url],
                console_errors=console, exceptions=exceptions)


def assert_renders_cleanly(result: dict, expected_svgs: int) -> None:
    """What a person would notice: errors, fetches, blank plots."""
    assert result["console_errors"] == [] and result["exceptions"] == [], result
    assert result["other_requests"] == [] and result["resources"] == [], result["other_requests"] + result["resources"]
    assert len(result["svgs"]) == expected_svgs, result["svgs"]
    for box in result["svgs"]:
        assert box["width"] > 50 and box["height"] > 30 and box["marks"] > 0, box
    assert result["text"] > 1000
