"""Load test of ``scunext serve``: N concurrent uploads of one large generated JPEG, on loopback only.

    python scripts/serve_load.py [--weights isic2017 | --run RUN_DIR] [--side 7000] [--format JPEG|PNG]
                                 [--clients 20] [--workers 2] [--queue 4] [--rounds 1]

It makes a ``side x side`` JPEG (or PNG) with Pillow (a smooth colour field with a dark blob, plus mild noise, so it
compresses like a photo), starts ``python -m scunext serve ... --port 0`` in a subprocess bound to 127.0.0.1,
fires ``--clients`` uploads at once (``--rounds`` times), then checks that the server still answers. It prints
every answer's status, the server's resident memory before the load and its peak (``VmHWM`` of
``/proc/PID/status``, Linux only), and exits 1 when an answer is not 200 or 503-with-Retry-After or the server died.
``tests/test_serve_load.py`` runs the same functions at a smaller size.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)/")


def make_jpeg(side: int, quality: int = 85, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A ``side x side`` RGB JPEG (or ``fmt="PNG"``) that looks a little like a skin photo: a smooth field, a dark
    blob, mild blocky noise."""
    rng = np.random.default_rng(seed)
    small = 64
    yy, xx = np.mgrid[0:small, 0:small] / small
    base = np.stack([200 - 40 * yy, 160 - 30 * xx, 140 - 20 * (xx + yy)], axis=-1).astype(np.uint8)
    im = Image.fromarray(base).resize((side, side), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    draw.ellipse((side * 0.3, side * 0.35, side * 0.7, side * 0.7), fill=(90, 60, 50))
    noise = Image.fromarray(rng.integers(0, 24, (side // 8, side // 8, 3), dtype=np.uint8))
    im = Image.blend(im, noise.resize((side, side), Image.Resampling.NEAREST).convert("RGB"), 0.08)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class Server:
    """A ``scunext serve`` subprocess on 127.0.0.1 and a free port."""

    process: subprocess.Popen
    port: int
    log: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, serve_args: list[str], timeout: float = 120.0) -> Server:
        cmd = [sys.executable, "-m", "scunext", "serve", *serve_args, "--host", "127.0.0.1", "--port", "0"]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        log: list[str] = []
        found = threading.Event()
        port: list[int] = []

        def reader() -> None:  # keeps the pipe drained for the server's whole life
            assert proc.stderr is not None
            for line in proc.stderr:
                log.append(line.rstrip())
                del log[:-200]
                m = _SERVING.search(line)
                if m and not found.is_set():
                    port.append(int(m.group(1)))
                    found.set()

        threading.Thread(target=reader, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("the server did not start:\n" + "\n".join(log[-20:]))
        return cls(proc, port[0], log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _multipart(data: bytes, model: str = "0") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection error)
    retry_after: str | None
    error: str | None
    seconds: float
    body: dict | None = None


def post_image(port: int, data: bytes, headers: dict[str, str] | None = None, timeout: float = 300.0) -> Answer:
    """POST ``data`` to ``/api/segment`` of the server on 127.0.0.1:``port``."""
    body, ctype = _multipart(data)
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/segment", body=body, headers={"Content-Type": ctype, **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        parsed = json.loads(raw) if raw else None
        return Answer(r.status, r.getheader("Retry-After"), (parsed or {}).get("error"), time.perf_counter() - start,
                      parsed)  # fmt: skip
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    finally:
        conn.close()


def fire(port: int, data: bytes, clients: int) -> list[Answer]:
    """``clients`` uploads of ``data`` started together (one thread each); their answers in order."""
    answers: list[Answer | None] = [None] * clients
    barrier = threading.Barrier(clients)

    def one(i: int) -> None:
        barrier.wait()
        answers[i] = post_image(port, data)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [a for a in answers if a is not None]


def get_status(port: int, path: str = "/api/models") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def answer_ok(a: Answer) -> bool:
    """200, or 503 with a Retry-After of whole seconds >= 1 and a JSON error."""
    if a.status == 200:
        return True
    return a.status == 503 and a.retry_after is not None and a.retry_after.isdigit() and int(a.retry_after) >= 1 \
        and bool(a.error)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", default="isic2017", help="released weights to serve (default isic2017)")
    src.add_argument("--run", help="a training run folder to serve instead of --weights")
    ap.add_argument("--side", type=int, default=7000, help="the image's side in pixels (default 7000)")
    ap.add_argument("--format", choices=["JPEG", "PNG"], default="JPEG", help="the upload's format (default JPEG)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent uploads (default 20)")
    ap.add_argument("--rounds", type=int, default=1, help="bursts of --clients uploads, one after the other")
    ap.add_argument("--workers", type=int, default=None, help="scunext serve --workers (default: its default)")
    ap.add_argument("--queue", type=int, default=None, help="scunext serve --queue (default: its default)")
    args = ap.parse_args()

    data = make_jpeg(args.side, fmt=args.format)
    serve_args = [args.run] if args.run else ["--weights", args.weights]
    if args.workers is not None:
        serve_args += ["--workers", str(args.workers)]
    if args.queue is not None:
        serve_args += ["--queue", str(args.queue)]
    print(f"{args.format} {args.side}x{args.side}, {len(data) / 1024:.0f} KB; scunext serve {' '.join(serve_args)}")
    server = Server.start(serve_args)
    ok = True
    try:
        rss0 = proc_status_kb(server.process.pid, "VmRSS")
        start = time.perf_counter()
        answers: list[Answer] = []
        for _ in range(args.rounds):
            answers += fire(server.port, data, args.clients)
        wall = time.perf_counter() - start
        after = get_status(server.port)
        peak = proc_status_kb(server.process.pid, "VmHWM")
        counts = Counter(a.status for a in answers)
        print(f"answers: {dict(sorted(counts.items()))} of {len(answers)} in {wall:.1f} s")
        served = [a.seconds for a in answers if a.status == 200]
        if served:
            print(f"200s took {min(served):.2f}-{max(served):.2f} s; "
                  f"Retry-After values: {sorted({a.retry_after for a in answers if a.retry_after})}")  # fmt: skip
        print(f"server RSS before the load {rss0 / 1024:.0f} MB, peak (VmHWM) {peak / 1024:.0f} MB")
        print(f"server alive: {server.alive()}, GET /api/models afterwards: {after}")
        bad = [a for a in answers if not answer_ok(a)]
        for a in bad[:5]:
            print(f"unexpected answer: {a.status} {a.error}")
        ok = not bad and server.alive() and after == 200
    finally:
        server.stop()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
