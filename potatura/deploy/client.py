"""Host client of the board agent (stdlib HTTP): deploy a bundle, run, check the golden set, benchmark.

    client = BoardClient("http://127.0.0.1:8765", token)
    client.deploy("runs/demo/deploy/pynq-z2/hls4ml")      # upload (sha256-verified there) + load
    y_codes, timing = client.run(x_codes)
    report = client.golden_check("runs/demo/deploy/pynq-z2/hls4ml")   # OutputMismatchError when off
    stats = client.benchmark([1, 8, 32], iterations=20, warmup=3)

Errors the agent reports come back as the same typed classes (potatura.deploy.errors); a link that
does not answer within the client's deadline raises LinkTimeoutError.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Optional, Sequence

import numpy as np

from potatura.deploy import bundle as bundles
from potatura.deploy.errors import AuthError, LinkError, LinkTimeoutError, OutputMismatchError, error_from_kind


class BoardClient:
    """One agent at `url` (http://host:port) with its token; `timeout_s` bounds every request."""

    def __init__(self, url: str, token: str, timeout_s: float = 120.0):
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, float(timeout_s)

    def _request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
                 timeout_s: Optional[float] = None) -> dict:
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type,
                   # the agent bounds its own waits a little inside ours, so its typed error arrives first
                   "X-Potatura-Deadline": f"{max(0.05, 0.9 * timeout):.3f}"}
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error", {})
            except (ValueError, AttributeError):
                error = {}
            if exc.code == 401:
                raise AuthError(f"{self.url}: {error.get('message', 'unauthorized')}") from None
            raise error_from_kind(error.get("kind", "AgentError"),
                                  f"{self.url}{path}: {error.get('message', exc.reason)}") from None
        except (socket.timeout, TimeoutError) as exc:
            raise LinkTimeoutError(f"{self.url}{path}: no answer within {timeout:g} s ({exc})") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise LinkTimeoutError(f"{self.url}{path}: no answer within {timeout:g} s") from None
            raise LinkError(f"{self.url}{path}: cannot reach the agent: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:
            raise LinkError(f"{self.url}{path}: connection failed: {exc}") from None

    def _post(self, path: str, payload: Optional[dict] = None, timeout_s: Optional[float] = None) -> dict:
        return self._request("POST", path, json.dumps(payload or {}).encode(), timeout_s=timeout_s)

    # -- the API ------------------------------------------------------------------------
    def info(self, timeout_s: Optional[float] = None) -> dict:
        return self._request("GET", "/info", timeout_s=timeout_s)

    def upload(self, bundle_dir, timeout_s: Optional[float] = None) -> str:
        """Upload a bundle folder (checked here first); return the agent's bundle id."""
        bundles.verify_bundle(bundle_dir)
        data = bundles.pack_bundle(bundle_dir)
        return self._request("PUT", "/bundle", data, "application/x-tar", timeout_s)["id"]

    def load(self, bundle_id: str, timeout_s: Optional[float] = None) -> dict:
        return self._post("/load", {"id": bundle_id}, timeout_s)

    def deploy(self, bundle_dir, timeout_s: Optional[float] = None) -> dict:
        """Upload + load; returns the agent's info after loading."""
        bundle_id = self.upload(bundle_dir, timeout_s)
        self.load(bundle_id, timeout_s)
        return self.info(timeout_s)

    def run(self, x_codes, timeout_s: Optional[float] = None) -> tuple[np.ndarray, dict]:
        """(N, *input shape) integer codes -> ((N, *output shape) int64 codes, timing dict)."""
        x = np.asarray(x_codes)
        answer = self._post("/run", {"x_codes": x.astype(np.int64).tolist()}, timeout_s)
        return np.asarray(answer["y_codes"], dtype=np.int64), answer["timing"]

    def validate(self, timeout_s: Optional[float] = None) -> dict:
        """The agent's golden check of its loaded bundle (report; no exception on mismatch)."""
        return self._post("/validate", {}, timeout_s)

    def golden_check(self, bundle_dir=None, timeout_s: Optional[float] = None) -> dict:
        """Golden set on the board: with bundle_dir, the host's golden codes are sent and compared
        here (the agent's copy is not trusted); without, the agent's /validate. Raises
        OutputMismatchError beyond the manifest's tolerance; returns the report."""
        from potatura.deploy.agent import golden_report

        if bundle_dir is None:
            report = self.validate(timeout_s)
        else:
            manifest = bundles.read_manifest(bundle_dir)
            x, expected = bundles.load_golden(bundle_dir, manifest)
            y, timing = self.run(x, timeout_s)
            report = golden_report(y, expected, int(manifest.get("tolerance", {}).get("max_abs_code_difference", 0)))
            report["timing"] = timing
        if not report["passed"]:
            m = report["first_mismatch"]
            raise OutputMismatchError(
                f"golden check: {report['samples'] - report['within_tolerance']}/{report['samples']} samples beyond "
                f"tolerance {report['tolerance_codes']} codes; first: sample {m['sample']} element {m['element']} "
                f"expected {m['expected']} got {m['got']}")
        return report

    def benchmark(self, batch_sizes: Sequence[int] = (1, 8, 32), iterations: int = 20, warmup: int = 3,
                  timeout_s: Optional[float] = None) -> dict:
        """Per batch size p50/p90/p99 of hardware-only and end-to-end seconds, throughput, and the
        runtime-vs-batch linear fits; labelled with their source ("emulated" or "measured")."""
        return self._post("/benchmark", {"batch_sizes": [int(b) for b in batch_sizes], "iterations": int(iterations),
                                         "warmup": int(warmup)}, timeout_s)

    def reset(self, timeout_s: Optional[float] = None) -> dict:
        return self._post("/reset", {}, timeout_s)

    def inject(self, timeout_s: Optional[float] = None, **faults) -> dict:
        """Emulated board only: e.g. inject(hang={"times": 1}), inject(dma_error={"channel": "s2mm",
        "kind": "slave"}), inject(flip_bit={"sample": 0, "element": 3, "bit": 0}),
        inject(slow_link={"seconds": 2}), inject(corrupt_upload={}), inject(clear=True)."""
        return self._post("/faults", faults, timeout_s)


def wait_ready(client: BoardClient, timeout_s: float = 30.0) -> dict:
    """Poll /info until the agent answers (after a start or restart)."""
    import time

    end = time.monotonic() + timeout_s
    while True:
        try:
            return client.info(timeout_s=2.0)
        except LinkError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
