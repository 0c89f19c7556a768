"""report.html in headless Chromium (Debian's chromium package), driven over the DevTools protocol:
it renders without console errors, every image loads, and the test keeps a screenshot."""

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI: chromium is missing; .ci/run must `apt-get install -y chromium`")
    pytest.skip("needs Debian's chromium (apt-get install -y chromium)", allow_module_level=True)
websocket = pytest.importorskip("websocket", reason="needs websocket-client (the dev extra)")


class DevTools:
    """One headless Chromium page over the DevTools protocol (JSON messages on a websocket)."""

    def __init__(self, profile_dir):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile_dir}",
             "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(match.group(1)) if match else None
        if port is None:
            raise RuntimeError("chromium did not open its DevTools port within 60 s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout_s: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((e for e in self.events if e.get("method") == event), None)
            if found:
                return found
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def inspect_page(path, profile_dir) -> dict:
    """Open `path` in headless Chromium; its console errors, images, h2 ids and a full-page PNG."""
    browser = DevTools(profile_dir)
    try:
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", url=path.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        images = browser.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"
            " height: i.naturalHeight}))"))["result"]["value"]
        headings = browser.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.querySelectorAll('h2')).map(h => h.id)"))["result"]["value"]
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    finally:
        browser.close()
    errors = [e for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    return {"errors": errors, "images": images, "headings": headings, "png": base64.b64decode(shot["data"])}


def test_report_renders_in_chromium_without_errors_and_every_image_loads(bench_run, tmp_path):
    run_dir, _ = bench_run
    page = inspect_page(run_dir / "bench" / "report.html", tmp_path / "profile")
    assert page["errors"] == []
    assert page["headings"] == ["summary", "accuracy", "layers", "resources", "latency", "cycles", "training"]
    assert len(page["images"]) >= 6
    for image in page["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    png = page["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "report.png").write_bytes(png)  # kept under the test's tmp dir for a look
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 1000 and height > 900  # the whole page, not only the first screen


def test_the_browser_check_sees_errors_and_broken_images(tmp_path):
    """The check above can fail: a page with a script error and an undecodable image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><h2 id="x">x</h2><img alt="broken" src="data:image/png;base64,AAAA">'
                   "<script>console.error('boom'); undefined_function();</script></body></html>")
    page = inspect_page(bad, tmp_path / "profile")
    kinds = sorted(e["method"] for e in page["errors"])
    assert "Runtime.consoleAPICalled" in kinds and "Runtime.exceptionThrown" in kinds
    assert page["images"] == [{"alt": "broken", "complete": True, "width": 0, "height": 0}]
