"""The board agent: run a bundle once (over SSH) or serve it over HTTP.

    python -m potatura.deploy.agent run --bundle DIR --mode execute|throughput|validate [--emulated]
    python -m potatura.deploy.agent serve [--host 127.0.0.1] [--port 8765] [--state DIR] [--emulated]
        (token: --token-file FILE or the POTATURA_AGENT_TOKEN environment variable)

Board side: stdlib + numpy (+ pynq on a board); Python 3.10, numpy 1.x.

The server is the standard library's http.server.ThreadingHTTPServer: it is on every PYNQ image
(any Python 3.10+) with nothing to install, it parses HTTP/1.1 for us, and a thread per request lets
/info answer while a run holds the accelerator. tornado (also on PYNQ images, under Jupyter) would
bring an event loop that buys nothing here: accelerator access is serialized by one lock anyway,
and the blocking DMA polls would have to leave the loop for a thread pool.

HTTP API (JSON bodies; `Authorization: Bearer <token>` on every request; optional header
`X-Potatura-Deadline: <seconds>` caps the request's waits):

    GET  /info                   agent and bundle versions, the loaded bundle, the device kind
    PUT  /bundle                 body: the bundle as a tar (potatura.deploy.bundle.pack_bundle);
                                 size-limited, no links or path escapes, sha256-verified, atomic -> {id}
    POST /load      {id}         load a stored bundle (persisted: a restarted agent loads it again)
    POST /run       {x_codes}    -> {y_codes, timing}
    POST /validate               the bundle's golden set -> {samples, exact, max_abs_code_difference, ...}
    POST /benchmark {batch_sizes, iterations, warmup} -> per batch p50/p90/p99, throughput; linear fit
    POST /reset                  reset the DMA and the HLS block
    POST /faults    {...}        emulated board only: inject faults (potatura.deploy.emulated.Faults)

Errors: HTTP status of the error class, body {"error": {"kind": "DmaSlaveError", "message": ...}}.
"""

from __future__ import annotations

import argparse
import hmac
import io
import json
import os
import secrets
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import numpy as np

from potatura import __version__
from potatura.deploy import bundle as bundles
from potatura.deploy.driver import Driver, PynqDevice, make_driver
from potatura.deploy.errors import (
    AuthError, BundleError, BundleTooLargeError, BusyError, DeployError, InputError, NotLoadedError)

DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD = 256 << 20  # bytes: bitstreams of the supported boards are < 40 MB
MAX_JSON_BODY = 64 << 20
DEFAULT_DEADLINE_S = 60.0
TOKEN_ENV = "POTATURA_AGENT_TOKEN"


def percentiles(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "mean": float(v.mean()), "min": float(v.min()),
            "max": float(v.max())}


def linear_fit(batches, seconds) -> dict:
    """Least-squares runtime = intercept_s + per_sample_s * batch over the per-batch medians."""
    b, s = np.asarray(batches, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    if len(set(b.tolist())) < 2:
        return {"intercept_s": None, "per_sample_s": None, "r2": None, "points": len(b)}
    slope, intercept = np.polyfit(b, s, 1)
    residual = s - (intercept + slope * b)
    total = float(((s - s.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else 1.0
    return {"intercept_s": float(intercept), "per_sample_s": float(slope), "r2": r2, "points": len(b)}


def golden_report(y: np.ndarray, expected: np.ndarray, tolerance: int) -> dict:
    diff = np.abs(y.reshape(len(y), -1) - expected.reshape(len(expected), -1))
    per_sample = diff.max(axis=1) if diff.size else np.zeros(len(y), dtype=np.int64)
    bad = np.flatnonzero(per_sample > tolerance)
    first = None
    if len(bad):
        i = int(bad[0])
        j = int(np.argmax(diff[i]))
        first = {"sample": i, "element": j, "expected": int(expected.reshape(len(expected), -1)[i, j]),
                 "got": int(y.reshape(len(y), -1)[i, j])}
    return {"samples": int(len(y)), "exact": int((per_sample == 0).sum()),
            "within_tolerance": int((per_sample <= tolerance).sum()), "tolerance_codes": int(tolerance),
            "max_abs_code_difference": int(diff.max()) if diff.size else 0,
            "passed": bool(len(bad) == 0), "first_mismatch": first}


class AgentCore:
    """The agent's state: the bundle store, the loaded driver, one accelerator lock.

    store_dir: bundles/<id>/ and loaded.json (the bundle to load again after a restart).
    emulated: run bundles on the emulated board (potatura's simulator) instead of pynq.
    """

    def __init__(self, store_dir, emulated: bool = False, max_upload: int = DEFAULT_MAX_UPLOAD,
                 device_factory=None):
        self.store = Path(store_dir)
        self.store.mkdir(parents=True, exist_ok=True)
        self.emulated = emulated
        self.max_upload = max_upload
        self.device_factory = device_factory or self._make_device
        self.lock = threading.Lock()
        self.bundle_id: Optional[str] = None
        self.bundle_dir: Optional[Path] = None
        self.manifest: Optional[dict] = None
        self.device = None
        self.driver: Optional[Driver] = None
        self.faults = None  # the emulated board's faults: they belong to the board, so survive a bundle load
        if emulated:
            from potatura.deploy.emulated import Faults

            self.faults = Faults()
        self.load_error: Optional[str] = None
        state = self.store / "loaded.json"
        if state.is_file():
            try:
                self.load(json.loads(state.read_text())["id"], deadline_s=DEFAULT_DEADLINE_S)
            except (DeployError, KeyError, ValueError, OSError) as exc:
                self.load_error = f"reloading the last bundle failed: {exc}"

    # -- devices ------------------------------------------------------------------------
    def _make_device(self, bundle_dir: Path, manifest: dict):
        if self.emulated:
            from potatura.deploy.emulated import EmulatedBoard

            return EmulatedBoard.from_bundle(bundle_dir, manifest)
        bit = manifest["bitstream"]
        if bit.get("placeholder") and not os.environ.get("POTATURA_EMULATED_PYNQ"):
            raise BundleError(f"{bundle_dir}: the bitstream is a placeholder ({bit.get('note', 'not built')}); "
                              "build it (make overlay in the hwgen project) and write the bundle again, or run "
                              "the agent with --emulated")
        if os.environ.get("POTATURA_EMULATED_PYNQ"):
            import potatura.deploy.pynq_device  # noqa: F401  (registers the emulated board with pynq)
        return PynqDevice(str(bundle_dir / bit["file"]))

    def _acquire(self, deadline_s: float) -> None:
        if not self.lock.acquire(timeout=max(0.0, deadline_s)):
            raise BusyError(f"the accelerator stayed busy for {deadline_s:g} s (another request holds it)")

    # -- operations ---------------------------------------------------------------------
    def info(self) -> dict:
        loaded = None
        if self.manifest is not None:
            m = self.manifest
            loaded = {"id": self.bundle_id, "board": m.get("board"), "backend": m.get("backend"),
                      "model": m.get("model"), "clock_mhz": m.get("clock_mhz"),
                      "potatura_version": m.get("potatura_version"),
                      "bitstream_placeholder": bool(m.get("bitstream", {}).get("placeholder")),
                      "input_shape": m["tensors"]["input"]["shape"], "output_shape": m["tensors"]["output"]["shape"]}
        return {"agent": "potatura-board-agent", "potatura_version": __version__,
                "bundle_format": bundles.BUNDLE_FORMAT, "driver_abi": bundles.DRIVER_ABI, "driver_abis": bundles.DRIVER_ABIS,
                "device": "emulated" if self.emulated else "pynq", "python": sys.version.split()[0],
                "numpy": np.__version__, "loaded": loaded, "load_error": self.load_error,
                "batches": getattr(self.device, "batches", None)}

    def upload(self, data: bytes, corrupt: bool = False) -> dict:
        if corrupt:
            data = _corrupt_one_file(data)
        bundle_id, path = bundles.unpack_upload(data, self.store, self.max_upload)
        return {"id": bundle_id, "files": len(bundles.read_manifest(path)["files"])}

    def load(self, bundle_id: str, deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
        if not isinstance(bundle_id, str) or not bundle_id.isalnum():
            raise BundleError(f"bundle id {bundle_id!r}: expected the id /bundle returned")
        path = self.store / "bundles" / bundle_id
        if not path.is_dir():
            raise BundleError(f"no uploaded bundle {bundle_id}")
        self._acquire(deadline_s)
        try:
            manifest = bundles.verify_bundle(path)
            device = self.device_factory(path, manifest)
            driver = make_driver(device, manifest, path)
            self.bundle_id, self.bundle_dir, self.manifest = bundle_id, path, manifest
            self.device, self.driver, self.load_error = device, driver, None
            if self.faults is not None and hasattr(device, "faults"):
                device.faults = self.faults
            tmp = self.store / ".loaded.json.tmp"
            tmp.write_text(json.dumps({"id": bundle_id}))
            os.replace(tmp, self.store / "loaded.json")
        finally:
            self.lock.release()
        return {"id": bundle_id, "board": manifest.get("board")}

    def _need_driver(self) -> Driver:
        if self.driver is None:
            raise NotLoadedError("no bundle loaded: PUT /bundle then POST /load")
        return self.driver

    def run(self, x_codes, deadline_s: float = DEFAULT_DEADLINE_S) -> tuple[np.ndarray, dict]:
        start = time.monotonic()
        self._acquire(deadline_s)
        try:
            driver = self._need_driver()
            left = deadline_s - (time.monotonic() - start)
            return driver.run(x_codes, deadline_s=max(0.05, min(left, driver.deadline_for(len(np.atleast_1d(x_codes))))))
        finally:
            self.lock.release()

    def validate(self, deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
        self._need_driver()
        x, expected = bundles.load_golden(self.bundle_dir, self.manifest)
        y, timing = self.run(x, deadline_s)
        report = golden_report(y, expected, int(self.manifest.get("tolerance", {}).get("max_abs_code_difference", 0)))
        report["timing"] = timing
        return report

    def benchmark(self, batch_sizes=(1, 8, 32), iterations: int = 20, warmup: int = 3,
                  deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
        driver = self._need_driver()
        if not batch_sizes or any(int(b) < 1 for b in batch_sizes) or iterations < 1 or warmup < 0:
            raise InputError("benchmark: batch sizes >= 1, iterations >= 1, warmup >= 0")
        x, _ = bundles.load_golden(self.bundle_dir, self.manifest)
        end = time.monotonic() + deadline_s
        rows = []
        for batch in [int(b) for b in batch_sizes]:
            xb = x[np.arange(batch) % len(x)]
            hw, e2e, cycles = [], [], []
            for i in range(warmup + iterations):
                left = end - time.monotonic()
                if left <= 0:
                    raise BusyError(f"benchmark passed its deadline of {deadline_s:g} s at batch {batch}")
                _, timing = self.run(xb, left)
                if i >= warmup:
                    hw.append(timing["hardware_s"])
                    e2e.append(timing["end_to_end_s"])
                    if "hardware_cycles" in timing:
                        cycles.append(timing["hardware_cycles"])
            hw_stats, e2e_stats = percentiles(hw), percentiles(e2e)
            row = {"batch": batch, "iterations": iterations, "warmup": warmup,
                   "hardware_s": hw_stats, "end_to_end_s": e2e_stats,
                   "hardware_throughput_per_s": batch / hw_stats["p50"] if hw_stats["p50"] > 0 else None,
                   "end_to_end_throughput_per_s": batch / e2e_stats["p50"]}
            if cycles:
                row["hardware_cycles"] = sorted(set(int(c) for c in cycles))
            rows.append(row)
        source = driver.device.timing_source
        return {"device": "emulated" if self.emulated else "pynq",
                "hardware_source": source, "end_to_end_source": "measured",
                "note": ("hardware_s: simulated accelerator cycles on the emulated board's virtual clock; "
                         "end_to_end_s: measured wall time on the agent's host (simulator included)")
                if source == "emulated" else
                "hardware_s: measured wall time from DMA start to both channels idle; end_to_end_s: measured, "
                "encode to decode",
                "clock_mhz": self.manifest["clock_mhz"], "rows": rows,
                "fit_hardware": linear_fit([r["batch"] for r in rows], [r["hardware_s"]["p50"] for r in rows]),
                "fit_end_to_end": linear_fit([r["batch"] for r in rows], [r["end_to_end_s"]["p50"] for r in rows])}

    def reset(self, deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
        self._acquire(deadline_s)
        try:
            self._need_driver().reset()
        finally:
            self.lock.release()
        return {"reset": True}

    def set_faults(self, spec: dict) -> dict:
        if not self.emulated:
            raise DeployError("faults can only be injected into the emulated board")
        self.faults.set(spec)
        return {"faults": spec}


def _corrupt_one_file(data: bytes) -> bytes:
    """The emulated link's corrupt_upload fault: flip one byte inside the first non-manifest file."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.size > 0 and member.name != bundles.MANIFEST:
                out = bytearray(data)
                out[member.offset_data + member.size // 2] ^= 0xFF
                return bytes(out)
    return data


class _Handler(BaseHTTPRequestHandler):
    server_version = "potatura-agent/" + __version__
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take to send its request (socket timeout)
    core: AgentCore
    token: str

    def log_message(self, fmt, *args) -> None:  # keep the console for the "listening" line and errors
        if os.environ.get("POTATURA_AGENT_LOG"):
            sys.stderr.write("agent: " + fmt % args + "\n")

    def _send(self, status: int, payload: dict) -> None:
        faults = self.core.faults
        if (faults is not None and faults.slow_link_s > 0 and not self.path.startswith("/faults")
                and faults.take("slow_link")):
            time.sleep(faults.slow_link_s)  # the emulated slow link holds the answer back
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its deadline); the agent carries on

    def _error(self, exc: DeployError) -> None:
        self._send(exc.http_status, {"error": {"kind": exc.kind, "message": str(exc)}})

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        given = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _deadline(self) -> float:
        try:
            return min(float(self.headers.get("X-Potatura-Deadline", DEFAULT_DEADLINE_S)), 3600.0)
        except ValueError:
            return DEFAULT_DEADLINE_S

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BundleError("a Content-Length header is required")
        if int(length) > limit:
            raise BundleTooLargeError(f"request body of {int(length)} bytes exceeds the limit of {limit} bytes")
        return self.rfile.read(int(length))

    def _json(self) -> dict:
        data = self._body(MAX_JSON_BODY)
        if not data:
            return {}
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise InputError(f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InputError("request body: a JSON object expected")
        return body

    def _dispatch(self, method: str) -> None:
        if not self._authorized():
            self.close_connection = True
            return self._error(AuthError("missing or wrong token (Authorization: Bearer <token>)"))
        core, path, deadline = self.core, self.path.split("?")[0], self._deadline()
        try:
            if method == "GET" and path == "/info":
                return self._send(200, core.info())
            if method == "PUT" and path == "/bundle":
                data = self._body(core.max_upload)
                faults = core.faults
                corrupt = bool(faults is not None and faults.corrupt_upload and faults.take("corrupt_upload"))
                return self._send(200, core.upload(data, corrupt=corrupt))
            if method == "POST" and path in ("/load", "/run", "/validate", "/benchmark", "/reset", "/faults"):
                body = self._json()
                if path == "/load":
                    return self._send(200, core.load(body.get("id"), deadline))
                if path == "/run":
                    if "x_codes" not in body:
                        raise InputError("/run: body needs x_codes (nested lists of integer codes)")
                    y, timing = core.run(np.asarray(body["x_codes"]), deadline)
                    return self._send(200, {"y_codes": y.tolist(), "timing": timing})
                if path == "/validate":
                    return self._send(200, core.validate(deadline))
                if path == "/benchmark":
                    return self._send(200, core.benchmark(body.get("batch_sizes", [1, 8, 32]),
                                                          int(body.get("iterations", 20)),
                                                          int(body.get("warmup", 3)), deadline))
                if path == "/reset":
                    return self._send(200, core.reset(deadline))
                return self._send(200, core.set_faults(body))
            self._send(404, {"error": {"kind": "DeployError", "message": f"no endpoint {method} {path}"}})
        except DeployError as exc:
            self._error(exc)
        except Exception as exc:  # a bug: say so, keep serving
            self._send(500, {"error": {"kind": "AgentError", "message": f"{type(exc).__name__}: {exc}"}})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")


def make_server(core: AgentCore, token: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """An HTTP server for `core` (port 0: an ephemeral port; server.server_address has it)."""
    if not token:
        raise AuthError("the agent needs a token (--token-file or POTATURA_AGENT_TOKEN)")
    handler = type("Handler", (_Handler,), {"core": core, "token": token})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def _read_token(path: Optional[str]) -> str:
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(TOKEN_ENV, "")


def _oneshot(args) -> int:
    bundle_dir = Path(args.bundle)
    manifest = bundles.verify_bundle(bundle_dir)
    core = AgentCore(args.state or bundle_dir.parent / ".agent-oneshot", emulated=args.emulated)
    device = core.device_factory(bundle_dir, manifest)
    core.bundle_id, core.bundle_dir, core.manifest = "local", bundle_dir, manifest
    core.device, core.driver = device, make_driver(device, manifest, bundle_dir)
    if args.mode == "validate":
        result = core.validate()
    elif args.mode == "throughput":
        result = core.benchmark([int(b) for b in args.batch_sizes.split(",")], args.iterations, args.warmup)
    else:
        x, _ = bundles.load_golden(bundle_dir, manifest)
        if args.input:
            with np.load(args.input, allow_pickle=False) as data:
                x = np.asarray(data["x_codes"])
        y, timing = core.run(x)
        result = {"y_codes": y.tolist(), "timing": timing}
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0 if result.get("passed", True) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m potatura.deploy.agent", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a bundle once (for SSH)")
    run.add_argument("--bundle", required=True)
    run.add_argument("--mode", choices=("execute", "throughput", "validate"), default="validate")
    run.add_argument("--emulated", action="store_true", help="the emulated board (needs potatura's simulator)")
    run.add_argument("--input", help="execute: .npz with x_codes (default: the golden inputs)")
    run.add_argument("--output", help="write the JSON result here instead of stdout")
    run.add_argument("--batch-sizes", default="1,8,32")
    run.add_argument("--iterations", type=int, default=20)
    run.add_argument("--warmup", type=int, default=3)
    run.add_argument("--state", help=argparse.SUPPRESS)
    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: use an SSH "
                                                           "tunnel, or 0.0.0.0 on a trusted lab network)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: an ephemeral port")
    serve.add_argument("--state", default=str(Path.home() / ".potatura-agent"), help="bundle store")
    serve.add_argument("--token-file", help=f"file holding the token (default: ${TOKEN_ENV})")
    serve.add_argument("--emulated", action="store_true")
    serve.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD / 2**20)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _oneshot(args)
        token = _read_token(args.token_file)
        core = AgentCore(args.state, emulated=args.emulated, max_upload=int(args.max_upload_mb * 2**20))
        server = make_server(core, token, args.host, args.port)
    except DeployError as exc:
        print(f"agent: {exc.kind}: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"potatura agent listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def generate_token() -> str:
    return secrets.token_urlsafe(24)


if __name__ == "__main__":
    sys.exit(main())
