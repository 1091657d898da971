"""report.html: contents, self-containment, unknown budgets, and a real render in headless Chromium.

The documents are made from real estimator output (estimate.check_model on the
MLPerf Tiny KWS model) so no TensorFlow is needed; the sweep tests render pages
of real builds. `render_in_chromium` drives Chromium over the DevTools protocol
with the standard library only, and is reused by test_sweep.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.report import format as fmt
from edgesparse.report import html as html_report
from edgesparse.report.document import summary_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# --------------------------------------------------------------------------- a report.json made of real parts

def _document(mlperf_dir: Path, profile: str = "rpi4") -> dict:
    from edgesparse.estimate import check_model
    from edgesparse.profiles.profile import load_profile
    from edgesparse.tflite.graph import load_graph

    kws = mlperf_dir / "keyword_spotting"
    int8, f32 = (kws / "kws_ref_model.tflite").read_bytes(), (kws / "kws_ref_model_float32.tflite").read_bytes()
    prof = load_profile(profile)
    check = check_model(int8, prof).to_dict()
    layers = [
        {"name": "conv_1", "pattern": "dense", "target": 0.0, "achieved": 0.0, "params": 640,
         "reason": "too small to matter: 640 weights < min_params (1000)", "pruned": False, "zeros": 0},
        {"name": "dw_conv_2", "pattern": "element-wise", "target": 0.8, "achieved": 0.7993, "params": 9216,
         "reason": "element-wise; TFMOT block_size needs a 2-D (Dense) kernel", "pruned": True, "zeros": 7366},
        {"name": "fc", "pattern": "block 1x16", "target": 0.8, "achieved": 0.8001, "params": 768,
         "reason": "output layer <kept> & dense", "pruned": False, "zeros": 0},
    ]
    return {
        "schema_version": 1, "tool": {"name": "edgesparse", "version": "0.1.0"},
        "versions": {"python": "3.11", "tensorflow": "2.21.0", "tflite-runtime": None},
        "created_utc": "2026-01-01T00:00:00+00:00",
        "options": {"profile": profile, "final_sparsity": 0.8, "quantize": "int8", "epochs": 3, "model": None},
        "profile": {"name": prof.name, "path": str(prof.path), "sha256": prof.sha256, "class": prof.device_class,
                    "runtime": prof.runtime, "assumptions": {k: prof.source(k) for k in prof.assumptions()}},
        "model": {"source": "demo:kws", "name": "kws", "params": 22000, "labels": ["yes", "no"]},
        "data": {"source": "synthetic", "n_train": 100, "n_val": 40, "num_classes": 12},
        "pruning": {"end_step": 100, "policy": [{"name": "dw_conv_2", "layer_type": "DepthwiseConv2D",
                                                 "block_size": [1, 1]}],
                    "schedule": {"kind": "polynomial", "initial_sparsity": 0.0, "final_sparsity": 0.8,
                                 "begin_step": 0, "end_step": 100, "frequency": 10, "total_steps": 120,
                                 "notes": ["end_step derived"]}},
        "sparsity": {"overall": 0.7412, "layers": layers},
        "conversion": {"quantize": "int8", "has_densify": False, "notes": ["a conversion note"],
                       "tensors": [{"name": "fc/MatMul", "dense_bytes": 768, "sparse_bytes": 300, "values_bytes": 200,
                                    "index_bytes": 100, "kept_sparse": True, "reason": "smaller",
                                    "read_by": "DENSIFY"}]},
        "sizes": {"dense_float32_bytes": len(f32), "dense_float32_gzip_bytes": len(f32) // 2,
                  "dense_int8_bytes": len(int8), "dense_int8_gzip_bytes": len(int8) // 2,
                  "artifact_bytes": len(int8), "artifact_gzip_bytes": len(int8) // 2,
                  "ratio_dense_float32_to_artifact": round(len(f32) / len(int8), 3),
                  "ratio_dense_int8_to_artifact": 1.0,
                  "breakdown": {"dense_float32": load_graph(f32).size.as_dict(),
                                "dense_int8": load_graph(int8).size.as_dict(),
                                "artifact": load_graph(int8).size.as_dict()}},
        "accuracy": {"dense_float": 0.9125, "pruned_keras": 0.905, "tflite": 0.9031, "drop_points": 0.94,
                     "agreement_pruned_keras_vs_tflite": 0.99, "max_drop_points": 2.0, "n_samples": 40,
                     "test": {"dense_float": 0.9, "tflite": 0.89, "drop_points": 1.0, "n_samples": 50}},
        "verification": {"interpreter": "LiteRT 2.3.0 (ai-edge-litert)", "kernels": ["XNNPACK ran 5 of 8 ops"]},
        "check": check, "passed": True, "failures": [], "timings_s": {"total": 12.5},
        "files": {"model.tflite": {"bytes": len(int8), "sha256": "ab" * 32}},
    }


@pytest.fixture(scope="module")
def document(mlperf_dir):
    return _document(mlperf_dir)


@pytest.fixture(scope="module")
def page(document):
    return html_report.render_report(document)


# --------------------------------------------------------------------------- contents

def test_every_section_is_there_with_real_values(document, page):
    for anchor in ("budgets", "sparsity", "size", "accuracy", "latency", "battery", "memory", "assumptions",
                   "verification", "options"):
        assert f'id="{anchor}"' in page, anchor
    # Per-layer sparsity: target, achieved and the policy reason (escaped).
    assert "79.93 %" in page and "output layer &lt;kept&gt; &amp; dense" in page and "DepthwiseConv2D" in page
    # Size breakdown of all three builds, exactly the graph parser's numbers.
    for build in ("dense_float32", "dense_int8", "artifact"):
        assert fmt.byte_size(document["sizes"]["breakdown"][build]["weight_bytes"]) in page
    assert "sparse indices" in page and "graph overhead" in page
    # Accuracy of each stage, and the held-out test split.
    for value in ("91.25 %", "90.50 %", "90.31 %", "89.00 %"):
        assert value in page, value
    # One latency row per op; flagged ops are highlighted and explained.
    ops = document["check"]["latency"]["ops"]
    assert page.count('<td class="op">') == len(ops)
    flagged = [o for o in ops if o["flag"]]
    assert page.count('<tr class="flag">') == len(flagged)
    # Gauges: one per budget, with limit, value and margin.
    assert page.count('class="gauge ') == len(document["check"]["budgets"])
    assert "margin" in page and "limit ≤" in page
    # Assumptions from the check and from the profile's [sources].
    for a in document["check"]["assumptions"]:
        assert html_report.template_env().filters["e"](a) in page
    assert "battery.capacity_mah" in page
    # Options and versions.
    assert "final_sparsity" in page and "2.21.0" in page and "not installed" in page


def test_terminal_summary_and_page_print_bytes_and_hours_the_same_way(document, page):
    summary = dict(summary_rows(document))
    check = document["check"]
    for label, text in (("RAM", fmt.byte_size(check["ram_bytes"])), ("battery life", fmt.hours(check["battery_hours"])),
                        ("accuracy dense float", fmt.percent(document["accuracy"]["dense_float"]))):
        assert summary[label] == text and text in page, (label, text)
    assert summary["artifact"].startswith(fmt.byte_size(document["sizes"]["artifact_bytes"]))


def test_formatting_vocabulary():
    assert [fmt.byte_size(n) for n in (512, 1536, 1_047_000, 26_388_336, 4 << 30)] == [
        "512 B", "1.5 KiB", "1022 KiB", "25.2 MiB", "4 GiB"]                 # never 1.02e+03 KiB
    assert fmt.byte_size(None) == "unknown" and fmt.byte_size("n/a", "-") == "-" and fmt.byte_count(26_388_336) == (
        "26,388,336 B")
    assert [fmt.hours(h) for h in (0.5, 30, 100, 20_000)] == ["30.0 min", "30.0 h", "4.2 days", "2.3 years"]
    assert fmt.quantity(2, "d") == fmt.hours(48) == "2.0 days"
    assert [fmt.quantity(v, "ms") for v in (1000, 9999.7, 12_345.6, 0.1234567)] == [
        "1000 ms", "10,000 ms", "12,346 ms", "0.1235 ms"]
    assert fmt.percent(0.9125) == "91.25 %" and fmt.percent(-0.05, 1, signed=True) == "-5.0 %"
    assert fmt.rate(1 / 60) == "1/min" and fmt.rate(None) == "unknown"


def test_page_marks_transferred_and_assumed_bases(mlperf_dir):
    """The page's rule is the terminal's (edgesparse._types.is_assumption)."""
    doc = _document(mlperf_dir, "rpizero2w")
    assert doc["check"]["latency"]["basis"] == "transferred"
    page = html_report.render_report(doc)
    assert f'<span class="badge warn">{doc["check"]["ram"]["basis"]}</span>' in page
    assert doc["check"]["ram"]["basis"] == "interpreter+assumption"


def test_page_is_self_contained(page):
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<img" not in page.lower()
    assert "@import" not in page and "@font-face" not in page
    refs = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if not r.startswith("#")]
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*([^)]*)\)", page))
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate ids across the inline SVGs"
    assert len(re.findall(r'<svg [^>]*class="plot"', page)) == 5  # sparsity, size, accuracy, latency, battery


def test_unknown_budget_is_neither_pass_nor_fail(mlperf_dir):
    doc = _document(mlperf_dir)
    check = doc["check"]
    check["latency_ms"] = None
    check["energy_mj"] = check["battery_hours"] = None
    for b in check["budgets"]:
        if b["name"] == "latency_ms":
            b.update(value=None, ok=False, margin=None)
    page = html_report.render_report(doc)
    gauge = re.search(r'<div class="gauge (\w+)" data-budget="latency_ms"[\s\S]*?</div>\s*</div>', page)
    assert gauge and gauge.group(1) == "unknown"
    assert "UNKNOWN" in gauge.group(0) and "FAIL" not in gauge.group(0) and "PASS" not in gauge.group(0)
    assert "no estimate" in gauge.group(0)
    assert "No battery curve: the check has no a latency estimate" in page


def test_battery_curve_is_the_estimators_formula(document):
    check = document["check"]
    default = check["energy"]["rate_per_s"]
    hours = html_report.battery_curve(check, [default / 100, default, default * 100])
    assert hours[1] == pytest.approx(check["battery_hours"], rel=1e-3)
    assert hours[0] >= hours[1] >= hours[2]


def test_old_report_without_breakdowns_still_renders(mlperf_dir):
    doc = _document(mlperf_dir)
    del doc["sizes"]["breakdown"], doc["profile"]["assumptions"]
    page = html_report.render_report(doc)
    assert "unknown" in page and 'id="size"' in page
    assert "battery.capacity_mah" in page  # read back from the unchanged profile file


def test_not_a_report_is_a_clear_error():
    from edgesparse.errors import EdgesparseError

    with pytest.raises(EdgesparseError, match="schema_version"):
        html_report.render_report({"hello": 1})


def test_report_command_regenerates_from_json_atomically(tmp_path, document):
    (tmp_path / "report.json").write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert html == html_report.render_report(document)
    (tmp_path / "report.json").write_text("{ not json")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "report.json" in result.output
    assert (tmp_path / "report.html").read_text() == html  # the earlier page is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]  # no temp files
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "No report.json" in result.output


# --------------------------------------------------------------------------- headless Chromium

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


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make system-deps)")


def no_latency_model(monkeypatch) -> None:
    """Make every profile look like one without [latency] coefficients (the estimator's real path)."""
    from edgesparse.estimate import latency as estimate

    monkeypatch.setattr(estimate, "latency_coefficients", lambda profile: None)


@needs_chromium
@pytest.mark.parametrize("profile, figures", [("stm32l4r5", 5), ("nrf52840", 3)])
def test_report_renders_in_headless_chromium(tmp_path, mlperf_dir, monkeypatch, profile, figures):
    """stm32l4r5: every plot; nrf52840 without a latency model: no latency or battery plot, an unknown budget."""
    if figures == 3:
        no_latency_model(monkeypatch)
    doc = _document(mlperf_dir, profile)
    if figures == 3:
        assert 'data-status="unknown"' in html_report.render_report(doc)
    page = html_report.render_report(doc)
    path = tmp_path / "report.html"
    path.write_text(page)
    shot = tmp_path / "report.png"
    result = render_in_chromium(path, screenshot=shot, max_height=4000)
    assert len(re.findall(r"<svg[ >]", page)) == figures + len(doc["check"]["budgets"])
    assert_renders_cleanly(result, expected_svgs=figures + len(doc["check"]["budgets"]))
    assert [s["label"] for s in result["svgs"] if not s["label"].startswith("gauge")] == [
        "sparsity-per-layer", "size-breakdown", "accuracy", "latency-per-op", "battery-vs-rate"][:figures]
    assert result["title"] == f"edgesparse report: kws on {profile}"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 4000)


@needs_chromium
def test_the_chromium_probe_sees_fetches_errors_and_blank_plots(tmp_path):
    """The checks above would pass vacuously if the probe saw nothing: show it catches each fault."""
    path = tmp_path / "bad.html"
    path.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                    '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom"); undefinedCall();</script>'
                    '<svg width="0" height="0"></svg></body></html>')
    result = render_in_chromium(path)
    assert result["other_requests"] == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in c for c in result["console_errors"]) and result["exceptions"]
    assert result["svgs"] == [{"label": None, "width": 0, "height": 0, "marks": 0}]
