"""The ``scunext serve`` web app: a local page and a small JSON API to try trained models on an image.

Endpoints (all answers are JSON except the page and its static files):

* ``GET /``: the page (plain HTML/CSS/JS served by the app itself; no CDN, no build step).
* ``GET /api/models``: the models on offer and the upload limits.
* ``POST /api/segment``: multipart form with ``image`` (a PNG, JPEG or DICOM file) and ``model`` (an id from
  ``/api/models``; optional when there is one model). Answers the segmented area in pixels and percent (and mm²
  when the image has a pixel spacing), the inference time, and the overlay (at most 1024 px a side) and the mask
  (0/255, the image's native size) as base64 PNGs.

Work in flight is bounded: a pool of worker threads decodes, segments and encodes, a bounded number of uploads
wait, and beyond that the answer is 503 with ``Retry-After`` (:mod:`scunext.serve.pool`). State-changing requests
from another origin get 403 (:mod:`scunext.serve.guards`).

Errors are ``{"error": "one line"}`` with a 4xx status for anything the client did wrong and 500 (with the
traceback in the server log only) for anything else. Uploads never touch the disk (see
:mod:`scunext.serve.upload`); results are returned in the response and not kept.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from flask import Flask, Request, Response, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as _werkzeug_server

from scunext.data import MAX_IMAGE_PIXELS
from scunext.data.io import PILLOW_MAX_PIXELS
from scunext.serve.guards import cross_origin_refusal, host_name
from scunext.serve.models import ServedModel
from scunext.serve.pool import DEFAULT_QUEUE, DEFAULT_WORKERS, WorkPool
from scunext.serve.segment import segment_upload
from scunext.serve.upload import UploadError

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "MAX_UPLOAD_MB_LIMIT",
    "MAX_PIXELS_LIMIT",
    "SERVER_HEADER",
    "create_app",
    "make_server",
    "serve",
    "is_loopback",
]

log = logging.getLogger(__name__)

#: default cap on the size of a request body (the upload plus a little form overhead), in megabytes
DEFAULT_MAX_UPLOAD_MB = 10.0
#: the largest settings of the two caps: every admitted request (workers + queue) may hold this much (an infinite cap
#: was a traceback). Pixels: Pillow's own hard limit rounded down to whole megapixels (178), above which a higher cap
#: could not admit a PNG or JPEG anyway (an image that size already takes 0.5-1.5 GB decoded)
MAX_UPLOAD_MB_LIMIT = 1024
MAX_PIXELS_LIMIT = PILLOW_MAX_PIXELS // 1_000_000 * 1_000_000
#: seconds a connection may stay silent (headers or body) before it is closed: a client that sends half an upload
#: and waits would otherwise hold one of the workers + queue places forever, and enough of them block the server
DEFAULT_READ_TIMEOUT_S = 30.0
#: the ``Server`` header of every answer (no server or Python version)
SERVER_HEADER = "scunext"

STATIC_DIR = Path(__file__).resolve().parent / "static"

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_DRAIN_CHUNK = 64 * 1024


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


def _error(message: str, status: int) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


#: werkzeug's messages (serving.DechunkedInput) for a chunk size that is not one; its other error, "Missing chunk
#: terminating newline", is what a chunked upload cut short also raises, which stays a 408
_BAD_CHUNK_ERRORS = ("Invalid chunk header", "Negative chunk length")


def _malformed_body(exc: BaseException) -> bool:
    """Werkzeug reports a body it cannot de-chunk as a disconnect: the OSError it raised is the
    ClientDisconnected's context. A read timeout (TimeoutError) or a body that just ended is not malformed."""
    cause = exc.__context__
    return isinstance(exc, ClientDisconnected) and isinstance(cause, (OSError, ValueError)) \
        and any(text in str(cause) for text in _BAD_CHUNK_ERRORS)


def _drain(limit: int) -> None:
    """Read and drop up to ``limit`` bytes of the request body, 64 KB at a time, so that a refused client reads the
    answer instead of a connection reset (an unread body makes the socket close with a reset); never holds more
    than one chunk, and stops at ``limit`` whatever the client sends."""
    length = request.content_length
    try:
        if length is not None:  # read the raw input: request.stream refuses a body over MAX_CONTENT_LENGTH
            stream = request.environ["wsgi.input"]
            remaining = min(length, limit)
            while remaining > 0:
                chunk = stream.read(min(_DRAIN_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        else:  # chunked: werkzeug's stream knows where the body ends
            stream = request.stream
            for _ in range(limit // _DRAIN_CHUNK + 1):
                if not stream.read(_DRAIN_CHUNK):
                    break
    except (HTTPException, OSError, ValueError):
        pass


def create_app(
    models: Sequence[ServedModel],
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = MAX_IMAGE_PIXELS,
    trusted_hosts: Sequence[str] | None = None,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
) -> Flask:
    """Build the Flask app serving ``models``.

    Args:
        models: the models on offer (at least one), e.g. from :func:`~scunext.serve.load_models`.
        max_upload_mb: cap on a request body in megabytes; larger requests get 413 without being read.
        max_pixels: cap on an image's width x height, checked from its header before decoding (422 above it).
        trusted_hosts: accepted ``Host`` header names (port ignored); others get 400, which defeats DNS-rebinding
            pages. ``None`` accepts any host. :func:`serve` passes the loopback names when bound to loopback.
        workers: threads that decode, segment and encode uploads (:class:`~scunext.serve.pool.WorkPool`).
        queue: uploads that may wait for a worker; beyond ``workers + queue`` requests in flight the answer is 503
            with ``Retry-After``. The pool is ``app.extensions["scunext.pool"]``.

    Raises:
        ValueError: no models, or a limit out of range.
    """
    if not models:
        raise ValueError("serve needs at least one model")
    if not 0 < max_upload_mb <= MAX_UPLOAD_MB_LIMIT:
        raise ValueError(f"max_upload_mb must be in (0, {MAX_UPLOAD_MB_LIMIT}], got {max_upload_mb}")
    if not 0 < max_pixels <= MAX_PIXELS_LIMIT:
        raise ValueError(f"max_pixels must be in (0, {MAX_PIXELS_LIMIT:,}], got {max_pixels}")
    models = list(models)
    by_id = {m.id: m for m in models}
    if len(by_id) != len(models):
        raise ValueError("model ids must be unique")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    drain_bytes = 8 * max_bytes  # a refused body is read and dropped up to this much; beyond, the client gets a reset
    pool = WorkPool(workers, queue)
    large_decode_lock = threading.Lock()  # one full-size decode of a large PNG at a time (~10 bytes a pixel)

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.request_class = _InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.json.sort_keys = False
    app.extensions["scunext.pool"] = pool
    trusted = {host_name(h) for h in trusted_hosts} if trusted_hosts else None

    @app.before_request
    def _check_request() -> Response | None:
        if trusted is not None and host_name(request.headers.get("Host", "")) not in trusted:
            return _error("this server only answers requests addressed to localhost", 400)
        refusal = cross_origin_refusal(request.method, request.headers, request.scheme, request.host)
        if refusal is not None:
            log.warning("refused %s %s from origin %r", request.method, request.path, request.headers.get("Origin"))
            _drain(drain_bytes)
            return _error(refusal, 403)
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
            # a body that declared a size within the limit tripped the form parser's field or part limits; one
            # that declared more, or none (chunked, counted as it arrives), is over the upload limit
            length = request.content_length
            if length is not None and length <= max_bytes:
                return _error("the form has too large a text field or too many parts; send one file field 'image' "
                              "and at most a short 'model' field", 413)  # fmt: skip
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
            formats=["PNG", "JPEG", "DICOM"],
        )

    @app.post("/api/segment")
    def _segment() -> Response:
        if request.content_length is not None and request.content_length > max_bytes:
            _drain(drain_bytes)
            return _error(f"the upload is larger than the {max_upload_mb:g} MB limit", 413)
        if not pool.admit():  # before the body is read: a refused upload costs no memory
            seconds = pool.retry_after()
            _drain(drain_bytes)
            response = _error(f"the server is busy with other images; try again in {seconds} s", 503)
            response.headers["Retry-After"] = str(seconds)
            return response
        try:
            try:
                upload = request.files.get("image")  # reading the form enforces MAX_CONTENT_LENGTH first
            except (ClientDisconnected, TimeoutError) as exc:  # it stopped sending (the read timeout): free the place
                if _malformed_body(exc):
                    return _error("the request body is malformed (bad chunked transfer encoding); send the image "
                                  "as a multipart form", 400)  # fmt: skip
                return _error("the upload stopped arriving; send the whole image in one request", 408)
            if upload is None:
                # (Werkzeug also drops a whole form whose part headers are not UTF-8, e.g. a Latin-1 file name)
                return _error("no image in the request (send a multipart form with a file field named 'image'; "
                              "part headers such as the file name must be UTF-8)", 400)  # fmt: skip
            if len(request.files.getlist("image")) > 1 or len(request.form.getlist("model")) > 1:
                # one answer describes one image: segmenting the first and ignoring the rest would be silently wrong
                return _error("send one image (and at most one model) per request", 400)
            model_id = request.form.get("model") or (models[0].id if len(models) == 1 else None)
            if model_id is None:
                return _error("choose a model ('model' form field, an id from /api/models)", 400)
            model = by_id.get(model_id)
            if model is None:
                return _error("unknown model id; see /api/models", 400)
            data = upload.read()
            upload.close()
            try:
                result = pool.run(
                    segment_upload, model, data, max_pixels=max_pixels, large_decode_lock=large_decode_lock
                )
            except UploadError as exc:
                return _error(str(exc), exc.status)
            return jsonify(result)
        finally:
            pool.release()

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, without the server and Python versions in the ``Server`` header, and with the HTTP
    layer's own refusals (414 request line too long, 431 header too long, 400 malformed request line: sent before
    the app sees the request) answered in the API's ``{"error": "one line"}`` JSON instead of Python's HTML page."""

    def version_string(self) -> str:
        return SERVER_HEADER

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        short, long = self.responses.get(code, ("Error", ""))
        text = message or short
        if explain or long:
            text = f"{text}: {explain or long}"
        self.log_error("code %d, message %s", code, message or short)
        self.send_response(code, short)  # the status line's reason is the standard phrase, never request text
        self.send_header("Connection", "close")
        body = b""
        if code >= 200 and code not in (204, 205, 304):
            body = json.dumps({"error": text}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class _QuietTimedOutDrain(logging.Filter):
    """Werkzeug drains what is left of a request body after the answer; after an upload that stopped arriving (the
    app answered 408) the socket has timed out, the drain raises ``OSError: cannot read from timed out object`` and
    werkzeug logged it as "Error on request" with a traceback, one per slow client. The client's mistake is answered
    and logged already: those records are dropped (tracebacks stay for real 500s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "cannot read from timed out object" in record.getMessage())


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 8000,
                read_timeout: float = DEFAULT_READ_TIMEOUT_S) -> BaseWSGIServer:  # fmt: skip
    """A threaded WSGI server for ``app`` (not started); ``port=0`` picks a free port (``server.server_port``).

    Each connection gets a thread, but the work is bounded by the app's :class:`~scunext.serve.pool.WorkPool`; a
    connection silent for ``read_timeout`` seconds is closed (an upload cut short answers 408 and frees its place).
    """
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, _QuietTimedOutDrain) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(_QuietTimedOutDrain())
    handler = type("_TimedRequestHandler", (_RequestHandler,), {"timeout": read_timeout})
    return _werkzeug_server(host, port, app, threaded=True, request_handler=handler)


class ListenError(ValueError):
    """The server cannot listen where it was asked to (a port in use, an address that is not this machine's)."""


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, a ``host``/``port`` the server could not listen on. Werkzeug would print two lines of
    its own and exit with status 1 instead; this binds (and closes) a socket the same way first."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ListenError(f"--host {host}: not an address or name of this machine ({why})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            hint = "; choose another --port (0 picks a free one)" if exc.errno == errno.EADDRINUSE else ""
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None


def serve(
    models: Sequence[ServedModel],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = MAX_IMAGE_PIXELS,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
) -> None:
    """Serve the page until interrupted (Ctrl+C).

    Bound to a loopback address (the default) the page is reachable from this machine only, and requests whose
    ``Host`` header is not a loopback name are refused. Any other address logs a warning: the server has no
    authentication and is meant for local use.
    """
    check_listen(host, port)  # before the app is built
    local = is_loopback(host)
    trusted = sorted({*_LOOPBACK_NAMES, host}) if local else None
    app = create_app(
        models, max_upload_mb=max_upload_mb, max_pixels=max_pixels, trusted_hosts=trusted, workers=workers, queue=queue
    )
    if not local:
        log.warning(
            "listening on %s, not a loopback address: anyone who can reach this machine can use the page "
            "(there is no authentication); use --host 127.0.0.1 for local use only",
            host,
        )
    server = make_server(app, host, port, read_timeout)
    shown = f"[{host}]" if ":" in host else host
    for m in models:
        log.info("model %s: %s from %s", m.id, m.label, m.source)
    log.info("%d worker(s), up to %d waiting upload(s); more get 503", workers, queue)
    log.info("serving on http://%s:%d/ (Ctrl+C to stop)", shown, server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.extensions["scunext.pool"].shutdown()
