"""The ``scunext serve`` web app: a local page and a small JSON API to try trained models on an image.

Endpoints (all answers are JSON except the page and its static files):

* ``GET /``: the page (plain HTML/CSS/JS served by the app itself; no CDN, no build step).
* ``GET /api/models``: the models on offer and the upload limits.
* ``POST /api/segment``: multipart form with ``image`` (a PNG or JPEG file) and ``model`` (an id from
  ``/api/models``; optional when there is one model). Answers the segmented area in pixels and percent, the
  inference time, and the overlay and the mask (0/255, the image's native size) as base64 PNGs.

Errors are ``{"error": "one line"}`` with a 4xx status for anything the client did wrong and 500 (with the
traceback in the server log only) for anything else. Uploads never touch the disk (see
:mod:`scunext.serve.upload`); results are returned in the response and not kept.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Request, Response, jsonify, request
from PIL import Image
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server as _werkzeug_server

from scunext.data import MAX_IMAGE_PIXELS
from scunext.deploy.predictor import Predictor
from scunext.serve.upload import UploadError, decode_upload
from scunext.visualize import overlay

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "ServedModel",
    "load_models",
    "create_app",
    "segment_image",
    "make_server",
    "serve",
    "is_loopback",
]

log = logging.getLogger(__name__)

#: default cap on the size of a request body (the upload plus a little form overhead), in megabytes
DEFAULT_MAX_UPLOAD_MB = 10.0

STATIC_DIR = Path(__file__).resolve().parent / "static"

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass
class ServedModel:
    """One model offered by the page.

    Attributes:
        id: short identifier used by the API (``"0"``, ``"1"``, ...); never a path.
        label: what the page shows, e.g. ``"sc_unext (demo)"``.
        predictor: the :class:`~scunext.deploy.predictor.Predictor` that segments (the same as ``scunext predict``).
        source: where the weights came from, for the log (a run folder; later, a released weights name).
    """

    id: str
    label: str
    predictor: Predictor
    source: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, Any]:
        """The public description returned by ``GET /api/models`` (no server paths)."""
        p = self.predictor
        return {
            "id": self.id,
            "label": self.label,
            "model": p.name,
            "in_channels": p.in_channels,
            "size": p.size,
            "engine": p.engine,
        }


def load_models(
    run_dirs: Sequence[str | Path],
    *,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str = "torch",
    warmup: bool = True,
) -> list[ServedModel]:
    """One :class:`ServedModel` per training run folder, labelled ``"MODEL (RUN_FOLDER_NAME)"``.

    Released weights (a future ``--weights NAME``) are meant to be added to this list the same way, as further
    :class:`ServedModel` entries built from their own :class:`~scunext.deploy.predictor.Predictor`.

    Args:
        run_dirs: training run folders.
        checkpoint: ``"best"`` or ``"last"``.
        device: where the models run.
        engine: inference engine (:data:`scunext.deploy.runtimes.ENGINES`).
        warmup: run each model once on a blank image, so that the first reported inference time is not inflated
            by one-off start-up costs.

    Raises:
        CheckpointError: a folder is missing or has no such checkpoint.
        ValueError: an unknown engine, or an engine that cannot run on ``device``.
    """
    models: list[ServedModel] = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        predictor = Predictor.from_run(run_dir, checkpoint, device=device, engine=engine)
        label = f"{predictor.name} ({run_dir.resolve().name})"
        if warmup:
            predictor.predict([np.zeros((predictor.size, predictor.size, 3), np.uint8)])
        models.append(ServedModel(str(len(models)), label, predictor, source=str(run_dir)))
    labels = [m.label for m in models]
    for m in models:  # two runs with the same folder name: keep the labels apart
        if labels.count(m.label) > 1:
            m.label = f"{m.label} #{int(m.id) + 1}"
    return models


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def segment_image(model: ServedModel, image: np.ndarray) -> dict[str, Any]:
    """Segment one decoded image and build the ``POST /api/segment`` answer.

    The mask is ``Predictor.predict`` at the image's native resolution, so ``area_px`` is what ``scunext predict``
    reports for the same file. ``inference_ms`` times that call (preprocessing, network, resizing back).
    """
    with model.lock:  # one inference per model at a time: bounds memory and keeps the timing honest
        start = time.perf_counter()
        mask = model.predictor.predict([image])[0]
        ms = (time.perf_counter() - start) * 1000.0
    area = int(mask.sum())
    h, w = mask.shape
    return {
        "model": model.id,
        "label": model.label,
        "width": w,
        "height": h,
        "area_px": area,
        "area_percent": 100.0 * area / mask.size,
        "inference_ms": round(ms, 2),
        "overlay_png": base64.b64encode(_png_bytes(overlay(image, mask))).decode("ascii"),
        "mask_png": base64.b64encode(_png_bytes(mask.astype(np.uint8) * 255)).decode("ascii"),
    }


class _InMemoryRequest(Request):
    """A request whose uploaded files are parsed into memory (never into temporary files on disk).

    The whole body is capped by ``MAX_CONTENT_LENGTH`` before parsing, so memory use is bounded.
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> io.BytesIO:
        return io.BytesIO()


def _host_name(host: str) -> str:
    """The name part of a ``Host`` header (``host``, ``host:port``, ``[v6]`` or ``[v6]:port``), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address
        return f"[{host}]"
    return host.partition(":")[0]


def _error(message: str, status: int) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def create_app(
    models: Sequence[ServedModel],
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = MAX_IMAGE_PIXELS,
    trusted_hosts: Sequence[str] | None = None,
) -> Flask:
    """Build the Flask app serving ``models``.

    Args:
        models: the models on offer (at least one), e.g. from :func:`load_models`.
        max_upload_mb: cap on a request body in megabytes; larger requests get 413 without being read.
        max_pixels: cap on an image's width x height, checked from its header before decoding (422 above it).
        trusted_hosts: accepted ``Host`` header names (port ignored); others get 400, which defeats DNS-rebinding
            pages. ``None`` accepts any host. :func:`serve` passes the loopback names when bound to loopback.

    Raises:
        ValueError: no models, or a non-positive limit.
    """
    if not models:
        raise ValueError("serve needs at least one model")
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")
    models = list(models)
    by_id = {m.id: m for m in models}
    if len(by_id) != len(models):
        raise ValueError("model ids must be unique")
    max_bytes = int(max_upload_mb * 1024 * 1024)

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.request_class = _InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.json.sort_keys = False
    trusted = {_host_name(h) for h in trusted_hosts} if trusted_hosts else None

    @app.before_request
    def _check_host() -> Response | None:
        if trusted is not None and _host_name(request.headers.get("Host", "")) not in trusted:
            return _error("this server only answers requests addressed to localhost", 400)
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return _error(f"the upload is larger than the {max_upload_mb:g} MB limit", 413)
        message = (exc.description or exc.name or "bad request").strip().splitlines()[0]
        return _error(message, exc.code or 400)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error("internal error while handling the request (details are in the server log)", 500)

    @app.get("/")
    def _index() -> Response:
        return app.send_static_file("index.html")

    @app.get("/api/models")
    def _models() -> Response:
        return jsonify(
            models=[m.describe() for m in models],
            max_upload_mb=max_upload_mb,
            max_megapixels=max_pixels / 1e6,
            formats=["PNG", "JPEG"],
        )

    @app.post("/api/segment")
    def _segment() -> Response:
        upload = request.files.get("image")  # reading the form enforces MAX_CONTENT_LENGTH first
        if upload is None:
            return _error("no image in the request (send a multipart form with a file field named 'image')", 400)
        model_id = request.form.get("model") or (models[0].id if len(models) == 1 else None)
        if model_id is None:
            return _error("choose a model ('model' form field, an id from /api/models)", 400)
        model = by_id.get(model_id)
        if model is None:
            return _error("unknown model id; see /api/models", 400)
        data = upload.read()
        try:
            image, _ = decode_upload(data, max_pixels=max_pixels)
        except UploadError as exc:
            return _error(str(exc), exc.status)
        return jsonify(segment_image(model, image))

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 8000) -> BaseWSGIServer:
    """A threaded WSGI server for ``app`` (not started); ``port=0`` picks a free port (``server.server_port``)."""
    return _werkzeug_server(host, port, app, threaded=True)


def serve(
    models: Sequence[ServedModel],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> None:
    """Serve the page until interrupted (Ctrl+C).

    Bound to a loopback address (the default) the page is reachable from this machine only, and requests whose
    ``Host`` header is not a loopback name are refused. Any other address logs a warning: the server has no
    authentication and is meant for local use.
    """
    local = is_loopback(host)
    trusted = sorted({*_LOOPBACK_NAMES, host}) if local else None
    app = create_app(models, max_upload_mb=max_upload_mb, max_pixels=max_pixels, trusted_hosts=trusted)
    if not local:
        log.warning(
            "listening on %s, not a loopback address: anyone who can reach this machine can use the page "
            "(there is no authentication); use --host 127.0.0.1 for local use only",
            host,
        )
    server = make_server(app, host, port)
    shown = f"[{host}]" if ":" in host else host
    for m in models:
        log.info("model %s: %s from %s", m.id, m.label, m.source)
    log.info("serving on http://%s:%d/ (Ctrl+C to stop)", shown, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
