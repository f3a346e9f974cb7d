"""``scunext serve``: the JSON API and the page through Flask's test client (no network, no browser)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("flask", reason="the 'serve' extra (Flask) is not installed")

from scunext.cli.main import main  # noqa: E402
from scunext.data import read_image, sample_dir  # noqa: E402
from scunext.deploy.predictor import Predictor  # noqa: E402
from scunext.serve import (  # noqa: E402
    DEFAULT_QUEUE,
    DEFAULT_WORKERS,
    DISPLAY_MAX_SIDE,
    SERVER_HEADER,
    WORK_MAX_PIXELS,
    create_app,
    decode_upload,
    load_models,
    make_server,
    sniff_format,
)
from scunext.serve.guards import cross_origin_refusal  # noqa: E402

ISIC_IMAGE = sorted((sample_dir("isic2017") / "images").glob("*.jpg"))[0]
XRAY_IMAGE = sorted((sample_dir("chest-xray-lungs") / "images").glob("*.png"))[0]


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def models(run_dir):
    return load_models([run_dir])


@pytest.fixture
def client(models):
    return create_app(models, max_upload_mb=1).test_client()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width x height`` pixels (a decompression-bomb probe)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _post(client, data: bytes, filename: str = "upload.png", headers=None, **fields):
    form = {"image": (io.BytesIO(data), filename), **fields}
    return client.post("/api/segment", data=form, content_type="multipart/form-data", headers=headers)


def _photo(width: int, height: int) -> Image.Image:
    """The ISIC sample image scaled up to ``width x height`` (a lesion the tiny model can find)."""
    return Image.open(ISIC_IMAGE).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    _photo(width, height).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    _photo(width, height).convert("L").save(buf, format="PNG")
    return buf.getvalue()


def _decode_png(b64: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_segment_matches_predictor_and_predict_cli(client, run_dir, tmp_path, capsys):
    r = _post(client, ISIC_IMAGE.read_bytes(), filename="whatever.txt", model="0")
    assert r.status_code == 200, r.json
    body = r.json
    image = read_image(ISIC_IMAGE)
    expected = Predictor.from_run(run_dir).predict([image])[0]
    assert body["area_px"] == int(expected.sum())
    assert body["area_percent"] == pytest.approx(100 * expected.sum() / expected.size)
    assert (body["width"], body["height"]) == (image.shape[1], image.shape[0])
    assert body["inference_ms"] > 0
    mask = _decode_png(body["mask_png"])
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, expected)
    assert _decode_png(body["overlay_png"]).shape == (*image.shape[:2], 3)

    # the same number as `scunext predict` prints for the file
    assert main(["predict", str(run_dir), str(ISIC_IMAGE), "--out", str(tmp_path / "pred")]) == 0
    assert f": {body['area_px']} px (" in capsys.readouterr().out


def test_grayscale_png_is_accepted(client, run_dir):
    r = _post(client, XRAY_IMAGE.read_bytes())  # single model: the 'model' field may be left out
    assert r.status_code == 200, r.json
    expected = Predictor.from_run(run_dir).predict([read_image(XRAY_IMAGE)])[0]
    assert r.json["area_px"] == int(expected.sum())


def _truncated_png() -> bytes:
    data = XRAY_IMAGE.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"", 400, "empty"),
        (b"just some text, renamed to .png\n", 415, "not a PNG, JPEG or DICOM"),
        (b"GIF89a" + bytes(64), 415, "GIF"),
        (_truncated_png(), 422, "truncated"),
        (_png_header_only(20000, 20000), 422, "decompression bomb"),
        (_png_header_only(8000, 8000), 422, "megapixels"),  # above the project's cap, below Pillow's own
        (b"\x89PNG\r\n\x1a\n" + bytes(40), 422, "cannot use this image"),
        (b"\xff\xd8\xff\xe0" + bytes(40), 422, "cannot use this image"),
    ],
    ids=["empty", "text-as-png", "gif", "truncated-png", "bomb-20000", "bomb-8000", "png-magic-only", "jpeg-magic"],
)
def test_bad_uploads_get_a_4xx_json_message(client, data, status, needle):
    r = _post(client, data)
    assert r.status_code == status, r.json
    message = r.json["error"]
    assert needle in message and "\n" not in message and "Traceback" not in message
    assert "/proc/" not in message and "/tmp" not in message  # no server paths


def test_oversize_body_is_refused(client):
    r = _post(client, b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024))
    assert r.status_code == 413
    assert "1 MB limit" in r.json["error"]


def test_request_errors(client):
    r = client.post("/api/segment", data={"model": "0"}, content_type="multipart/form-data")
    assert r.status_code == 400 and "no image" in r.json["error"]
    r = _post(client, ISIC_IMAGE.read_bytes(), model="../../etc/passwd")
    assert r.status_code == 400 and "unknown model" in r.json["error"]
    assert client.get("/api/segment").status_code == 405
    r = client.get("/static/../app.py")
    assert r.status_code == 404 and "error" in r.json


def test_models_listing_and_page(models, run_dir):
    two = load_models([run_dir, run_dir])
    client = create_app(two).test_client()
    r = client.get("/api/models")
    assert r.status_code == 200
    body = r.json
    assert [m["id"] for m in body["models"]] == ["0", "1"]
    assert body["models"][0]["model"] == "unext_s" and run_dir.name in body["models"][0]["label"]
    assert len({m["label"] for m in body["models"]}) == 2  # same folder twice: labels still distinct
    assert body["max_upload_mb"] == 10 and body["formats"] == ["PNG", "JPEG", "DICOM"]  # DICOM is accepted too
    assert str(run_dir.parent) not in r.get_data(as_text=True)  # no server paths
    r = _post(client, ISIC_IMAGE.read_bytes())
    assert r.status_code == 400 and "choose a model" in r.json["error"]
    assert _post(client, ISIC_IMAGE.read_bytes(), model="1").status_code == 200

    page = client.get("/")
    assert page.status_code == 200 and b'id="file"' in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # everything served locally
    for asset in ("/static/app.js", "/static/style.css"):
        res = client.get(asset)
        assert res.status_code == 200
        assert b"http://" not in res.data and b"https://" not in res.data


def test_host_header_check(models):
    client = create_app(models, trusted_hosts=["localhost", "127.0.0.1", "[::1]"]).test_client()
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example:8000"):
        r = client.get("/api/models", headers={"Host": host})
        assert r.status_code == 400 and "localhost" in r.json["error"], host


def test_decode_upload_is_read_image():
    data = ISIC_IMAGE.read_bytes()
    up = decode_upload(data, work_pixels=WORK_MAX_PIXELS)
    assert up.format == "jpeg" and sniff_format(XRAY_IMAGE.read_bytes()) == "png"
    np.testing.assert_array_equal(up.image, read_image(ISIC_IMAGE))
    assert up.size == up.image.shape[:2] and not up.reduced and up.pixel_spacing_mm is None


def test_decode_upload_reduces_only_large_jpegs():
    big = _jpeg(2000, 1500)
    # the smallest JPEG scale whose sides still cover the image fitted to work_pixels
    for work_pixels, shape in [(250_000, (750, 1000, 3)), (60_000, (375, 500, 3)), (1_000_000, (1500, 2000, 3))]:
        up = decode_upload(big, work_pixels=work_pixels)  # fitted: 433x577, 212x282, 866x1154
        assert up.image.shape == shape, work_pixels
        assert up.size == (1500, 2000) and up.reduced == (shape[0] != 1500)
    assert decode_upload(big).image.shape == (1500, 2000, 3)  # no work_pixels: full decode
    png = _png(1000, 800)  # only JPEGs have a cheap reduced decode
    assert decode_upload(png, work_pixels=60_000).image.shape == (800, 1000)


def test_cli_user_errors(run_dir, capsys):
    assert main(["serve"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    assert main(["serve", str(run_dir.parent / "missing"), "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_port_in_use_or_an_unknown_host_is_one_line(run_dir, capsys):
    """Werkzeug printed two lines of its own and exited with status 1; now one line and exit 2, before serving."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        err = [line for line in err if not line.startswith("INFO ")]
        assert err == [f"scunext serve: error: cannot listen on 127.0.0.1:{port}: Address already in use; choose "
                       "another --port (0 picks a free one)"], err  # fmt: skip
    assert main(["serve", str(run_dir), "--host", "999.1.1.1", "--port", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and "--host 999.1.1.1: not an address or name of this machine" in err[0], err


class _FakeServer:
    server_port = 8123

    def serve_forever(self) -> None:
        pass

    def server_close(self) -> None:
        pass


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_warns_when_not_loopback(models, monkeypatch, caplog, host, warned):
    import scunext.serve.app as serve_app

    seen = {}

    def fake_make_server(app, host, port, read_timeout):
        seen["app"] = app
        return _FakeServer()

    monkeypatch.setattr(serve_app, "make_server", fake_make_server)
    with caplog.at_level("INFO", logger="scunext.serve"):
        serve_app.serve(models, host=host, port=0)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert bool(warnings) == warned
    assert "http://" in caplog.text
    evil = seen["app"].test_client().get("/api/models", headers={"Host": "evil.example"}).status_code
    assert evil == (200 if warned else 400)  # the Host check is on for loopback binds


# --- bounded work, large images, cross-origin refusal, headers (issue 10) ---------------------------------------


def test_large_jpeg_is_segmented_reduced_and_answered_at_native_size(client, run_dir):
    data = _jpeg(4200, 4000)  # 16.8 MP: decoded at 1/2 scale, computed at <= 4 MP
    r = _post(client, data)
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["width"], body["height"]) == (4200, 4000)
    cw, ch = body["computed_width"], body["computed_height"]
    assert cw * ch <= WORK_MAX_PIXELS and abs(cw / ch - 4200 / 4000) < 0.01
    mask = _decode_png(body["mask_png"]) == 255
    assert mask.shape == (4000, 4200)  # the download stays at native size
    assert body["area_px"] == int(mask.sum())
    assert body["area_percent"] == pytest.approx(100 * mask.mean())
    shown = _decode_png(body["overlay_png"])
    assert max(shown.shape[:2]) == DISPLAY_MAX_SIDE and shown.shape[2] == 3
    # no pixel spacing in a JPEG; the quality fields are reserved (null)
    assert body["pixel_spacing_mm"] is None and body["area_mm2"] is None
    assert 0 <= body["quality_score"] <= 1 and isinstance(body["review"], bool)
    # the same lesion as the full-resolution Predictor finds, up to the boundary
    expected = Predictor.from_run(run_dir).predict([np.asarray(Image.open(io.BytesIO(data)))])[0]
    assert expected.sum() > 0.01 * expected.size  # a real mask, so that the comparison means something
    iou = (mask & expected).sum() / (mask | expected).sum()
    assert iou > 0.97, iou


def test_pixel_cap_is_checked_before_decoding(models):
    client = create_app(models, max_pixels=1_000_000).test_client()
    r = _post(client, _png(1200, 1000))
    assert r.status_code == 422 and "1.2 megapixels" in r.json["error"] and "limit of 1 megapixels" in r.json["error"]
    assert _post(client, _png(1000, 1000)).status_code == 200
    assert client.get("/api/models").json["max_megapixels"] == 1


@pytest.mark.parametrize("queue", [0, 1])
def test_full_server_answers_503_with_retry_after(models, monkeypatch, queue):
    app = create_app(models, workers=1, queue=queue)
    pool = app.extensions["scunext.pool"]
    predictor = models[0].predictor
    original = predictor.logits
    started, release = threading.Event(), threading.Event()

    def slow_logits(x, *args, **kwargs):
        started.set()
        assert release.wait(60)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(predictor, "logits", slow_logits)
    data = XRAY_IMAGE.read_bytes()
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(_post(app.test_client(), data))) for _ in range(1 + queue)
    ]
    for t in threads:
        t.start()
    assert started.wait(60)
    deadline = time.monotonic() + 60
    while pool.in_flight < 1 + queue and time.monotonic() < deadline:  # one running, `queue` waiting
        time.sleep(0.01)
    assert pool.in_flight == 1 + queue

    r = _post(app.test_client(), data)  # one more than workers + queue
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
    assert "busy" in r.json["error"] and "\n" not in r.json["error"]

    release.set()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * (1 + queue)
    assert pool.in_flight == 0
    assert _post(app.test_client(), data).status_code == 200  # slots given back


@pytest.mark.parametrize(
    ("method", "headers", "host", "refused"),
    [
        ("POST", {}, "127.0.0.1:8000", False),  # curl, scripts: no Origin
        ("POST", {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}, "127.0.0.1:8000", False),
        ("POST", {"Origin": "HTTP://LOCALHOST:8000"}, "localhost:8000", False),
        ("POST", {"Origin": "http://localhost:80"}, "localhost", False),  # default port
        ("POST", {"Origin": "http://[::1]:8000"}, "[::1]:8000", False),
        ("POST", {"Sec-Fetch-Site": "none"}, "localhost:8000", False),
        ("GET", {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, "localhost:8000", False),
        ("POST", {"Origin": "http://evil.example"}, "localhost:8000", True),
        ("POST", {"Origin": "http://localhost:3000"}, "localhost:8000", True),  # another port on this machine
        ("POST", {"Origin": "https://localhost:8000"}, "localhost:8000", True),
        ("POST", {"Origin": "null"}, "localhost:8000", True),
        ("POST", {"Origin": "http://localhost:8000/page"}, "localhost:8000", True),
        ("POST", {"Origin": "http://localhost:99999"}, "localhost:8000", True),
        ("POST", {"Sec-Fetch-Site": "cross-site"}, "localhost:8000", True),
        ("POST", {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:8000"}, "localhost:8000", True),
        ("PUT", {"Origin": "http://evil.example"}, "localhost:8000", True),
    ],
)
def test_cross_origin_refusal_table(method, headers, host, refused):
    reason = cross_origin_refusal(method, headers, "http", host)
    assert (reason is not None) == refused, reason
    if refused:
        assert "cross-origin request refused" in reason and "\n" not in reason


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}, 403),
    ],
    ids=["no-origin", "same-origin", "evil-fetch", "evil-origin-only", "other-port"],
)
def test_cross_origin_posts_are_refused(client, headers, status):
    r = _post(client, XRAY_IMAGE.read_bytes(), headers=headers)  # the test client's Host is "localhost"
    assert r.status_code == status, r.json
    if status == 403:
        assert "cross-origin" in r.json["error"] and "area_px" not in r.json
    else:
        assert r.json["area_px"] >= 0


@pytest.fixture
def live_server(models):
    """The app on a real loopback socket (the Server header is written by the WSGI server, not by Flask)."""
    server = make_server(create_app(models, trusted_hosts=["localhost", "127.0.0.1"]), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_headers_do_not_advertise_versions(live_server):
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=30)
    for path in ("/api/models", "/", "/nowhere"):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.getheader("Server") == SERVER_HEADER, path
        everything = " ".join(f"{k}: {v}" for k, v in r.getheaders())
        assert "Python" not in everything and "Werkzeug" not in everything and "werkzeug" not in everything
        conn.close()
    # a request the HTTP layer itself refuses (header line too long: 431, before Flask) names no versions either
    raw = _raw_http(live_server, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.") and b"\r\nServer: " + SERVER_HEADER.encode() + b"\r\n" in raw
    assert b"Python" not in raw and b"Werkzeug" not in raw


@pytest.mark.parametrize("request_bytes, status, words", [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "URI Too Long"),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
    (b'GET / "x<b> HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, "Bad request syntax"),
])  # fmt: skip
def test_the_http_layers_own_refusals_answer_json(live_server, request_bytes, status, words):
    """414/431/400 are sent by the HTTP server before the app sees the request: they were Python's HTML page, now
    the API's one-line JSON error (a quote in the request text stays valid JSON; no markup is echoed as HTML)."""
    raw = _raw_http(live_server, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.0 {status} ".encode()) or head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"\r\nContent-Type: application/json\r\n" in head and b"<html" not in raw.lower()
    error = json.loads(body)["error"]
    assert words in error and "\n" not in error, error


def test_cross_origin_post_over_the_wire_gets_a_json_403(live_server):
    """The refused body is drained, so the browser or client reads the 403 instead of a connection reset."""
    data = _jpeg(1500, 1500)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=30)
    conn.request(
        "POST",
        "/api/segment",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": "http://evil.example"},
    )
    r = conn.getresponse()
    assert r.status == 403
    assert "cross-origin" in json.loads(r.read())["error"]
    conn.close()


def test_cli_pool_options(run_dir, capsys):
    from scunext.cli import serve as cli_serve
    from scunext.serve import app, pool
    from scunext.serve.app import DEFAULT_READ_TIMEOUT_S

    assert (cli_serve.DEFAULT_WORKERS, cli_serve.DEFAULT_QUEUE) == (DEFAULT_WORKERS, DEFAULT_QUEUE)
    assert (cli_serve.MAX_WORKERS, cli_serve.MAX_QUEUE) == (pool.MAX_WORKERS, pool.MAX_QUEUE)
    assert cli_serve.MAX_UPLOAD_MB_LIMIT == app.MAX_UPLOAD_MB_LIMIT
    assert cli_serve.MAX_MEGAPIXELS_LIMIT * 1_000_000 == app.MAX_PIXELS_LIMIT
    assert cli_serve.DEFAULT_READ_TIMEOUT_S == DEFAULT_READ_TIMEOUT_S
    with pytest.raises(ValueError, match="between 1 and 64"):
        pool.WorkPool(workers=65)
    with pytest.raises(ValueError, match="between 0 and 256"):
        pool.WorkPool(queue=257)
    for argv, needle in [(["--workers", "0"], "--workers"), (["--queue", "-1"], "--queue"),
                         (["--workers", "100000"], "--workers must be between 1 and 64"),
                         (["--queue", "1000000000"], "--queue must be between 0 and 256"),
                         (["--max-megapixels", "inf"], "--max-megapixels must be in (0, 178]"),
                         (["--max-upload-mb", "inf"], "--max-upload-mb must be in (0, 1024]"),
                         (["--max-upload-mb", "nan"], "--max-upload-mb"),
                         (["--read-timeout", "0"], "--read-timeout"), (["--read-timeout", "nan"], "--read-timeout")]:
        assert main(["serve", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_quality_file_is_the_served_models_calibration(tmp_path, monkeypatch, capsys):
    """serve --quality FILE (a site calibration) replaces the one served model's own quality.json; it needs exactly
    one model, and an unreadable file is one line, before any model is loaded."""
    import scunext.serve as served
    from scunext.deploy.quality import QualityCalibration, load_calibration
    from scunext.weights import weights_dir

    site = tmp_path / "site.json"
    QualityCalibration(**{**load_calibration(weights_dir("lungs")).__dict__, "threshold": 0.123}).to_json(site)
    seen = {}
    monkeypatch.setattr(served, "serve", lambda models, **kw: seen.setdefault("models", models))
    assert main(["serve", "--weights", "lungs", "--quality", str(site)]) == 0
    assert [m.predictor.quality.threshold for m in seen["models"]] == [0.123]
    for argv, needle in [(["--weights", "isic2017", "--quality", str(site)], "exactly one RUN_DIR"),
                         (["--quality", str(tmp_path / "none.json")], "not a readable quality file")]:  # fmt: skip
        assert main(["serve", "--weights", "lungs", *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_large_png_decodes_run_one_at_a_time(models, monkeypatch):
    """A PNG has no reduced decode: above the computed size, its full-size decodes are serialised by the lock."""
    import scunext.serve.upload as upload_module
    from scunext.serve import segment_upload
    from scunext.serve.upload import needs_full_decode

    big_png, small_png, big_jpeg = _png(600, 500), _png(200, 150), _jpeg(600, 500)
    assert needs_full_decode(big_png, 100_000) and not needs_full_decode(small_png, 100_000)
    assert not needs_full_decode(big_jpeg, 100_000)  # a JPEG is decoded reduced instead

    active, peak, guard = [0], [0], threading.Lock()
    real_read_image = upload_module.read_image

    def counting_read_image(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        try:
            return real_read_image(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(upload_module, "read_image", counting_read_image)

    def burst(data: bytes, lock) -> int:
        peak[0] = 0
        results: list = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    segment_upload(models[0], data, work_pixels=100_000, large_decode_lock=lock)
                )
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 3 and all((r["width"], r["height"]) == (600, 500) for r in results)
        return peak[0]

    assert burst(big_png, threading.Lock()) == 1
    assert burst(big_png, None) > 1  # without the lock they overlap: the check above can fail
    assert burst(big_jpeg, threading.Lock()) > 1  # JPEGs are decoded reduced, in parallel


def test_byte_cap_over_the_wire_is_a_json_413(live_server):
    """A body over --max-upload-mb (10 MB here) is refused from its Content-Length, before it is parsed."""
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'.encode()
        + b"\x89PNG\r\n\x1a\n"
        + bytes(11 * 1024 * 1024)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=60)
    conn.request(
        "POST", "/api/segment", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    r = conn.getresponse()
    assert r.status == 413
    assert "10 MB limit" in json.loads(r.read())["error"]
    conn.close()


def test_dicom_upload_is_segmented_with_its_area_in_mm2(client, tmp_path):
    """A DICOM upload (recognised by its preamble, whatever its name) is read through the DICOM reader; its
    PixelSpacing turns the area into mm², and the mask equals the one of the same pixels uploaded as PNG."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(Image.open(ISIC_IMAGE).convert("L"), dtype=np.float64)
    # full 0..255 range: a DICOM without a window is min-max scaled (docs/data.md), a no-op for such pixels
    pixels = np.round(255 * (pixels - pixels.min()) / (pixels.max() - pixels.min())).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [0.2, 0.25]
    ds.PixelData = pixels.tobytes()
    path = tmp_path / "IM0001"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert sniff_format(data) == "dicom"

    r = _post(client, data, filename="IM0001")
    assert r.status_code == 200, r.json
    body = r.json
    assert body["pixel_spacing_mm"] == [0.2, 0.25]
    assert body["area_mm2"] == pytest.approx(body["area_px"] * 0.2 * 0.25)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    png = _post(client, buf.getvalue()).json
    assert png["area_px"] == body["area_px"] and png["area_mm2"] is None
    assert np.array_equal(_decode_png(png["mask_png"]), _decode_png(body["mask_png"]))


def test_quality_score_and_review_flag_in_the_answer(client, run_dir):
    """The answer carries the model's quality score and review flag, the same as scunext predict computes (one
    flipped pass at the model's input size)."""
    from scunext.deploy.quality import quality_from_logits

    body = _post(client, ISIC_IMAGE.read_bytes(), filename="lesion.jpg").json
    predictor = Predictor.from_run(run_dir)
    x = predictor.prepare(np.asarray(Image.open(ISIC_IMAGE).convert("RGB")))[None]
    q = quality_from_logits(predictor.logits(x)[0], predictor.logits(x.flip(-1)).flip(-1)[0], predictor.quality)
    assert body["quality_score"] == pytest.approx(q.score, abs=1e-4) and body["review"] == q.review


def test_a_near_empty_mask_is_flagged_in_the_answer(run_dir):
    """A model that finds nothing (the run's weights with the head's bias pushed down) gives an empty mask: the
    answer flags it for review as near-empty, whatever its confidence."""
    import dataclasses

    from scunext.serve.models import ServedModel

    predictor = Predictor.from_run(run_dir)
    with torch.no_grad():
        predictor.model.head.bias -= 1000.0
    empty = ServedModel("0", "finds nothing", dataclasses.replace(predictor))  # a runner built from these weights
    buf = io.BytesIO()
    _photo(256, 256).save(buf, format="PNG")
    body = _post(create_app([empty]).test_client(), buf.getvalue()).json
    assert body["area_px"] == 0
    assert body["review"] is True and "near-empty" in body["review_reason"], body


def test_the_work_size_of_an_extreme_aspect_ratio_stays_within_the_cap():
    """A 50,000,000 x 1 image (at the upload cap) was "fitted" to 14,481,546 x 1: 3.6x the 4-megapixel work cap,
    because the short side was rounded back up to 1 without shrinking the long one."""
    from scunext.serve.upload import fit_size

    for size in [(1, 50_000_000), (50_000_000, 1), (3, 20_000_000), (7000, 7000), (2048, 2048), (1, 1)]:
        h, w = fit_size(size, max_pixels=WORK_MAX_PIXELS)
        assert h * w <= max(WORK_MAX_PIXELS, 1) and h >= 1 and w >= 1, (size, h, w)
    assert fit_size((2048, 2048), max_pixels=WORK_MAX_PIXELS) == (2048, 2048)
    assert fit_size((1, 5000), max_side=1024) == (1, 1024)


def test_an_upload_that_stops_arriving_frees_its_place(run_dir):
    """A client that sends half a body and waits held one of the workers + queue places forever (six of them
    blocked the server): after the read timeout it gets 408 and the next upload is served."""
    models = load_models([run_dir])
    app = create_app(models, workers=1, queue=0)
    server = make_server(app, "127.0.0.1", 0, read_timeout=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        png = io.BytesIO()
        Image.fromarray(read_image(sorted((sample_dir("isic2017") / "images").iterdir())[0])).save(png, "PNG")
        boundary = "xyz"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + png.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nContent-Type: "
                f"multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        slow = socket.create_connection(("127.0.0.1", server.server_port))
        slow.sendall(head + body[: len(body) // 2])  # and then nothing
        slow.settimeout(20)
        answer = b""  # read to the close: the headers and the body can come in separate packets
        while chunk := slow.recv(65536):
            answer += chunk
        answer = answer.decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "stopped arriving" in answer, answer[:300]
        slow.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("POST", "/api/segment", body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.shutdown()


def test_a_malformed_chunked_body_is_a_400_not_a_timeout(run_dir):
    """An invalid chunk size was answered at once with 408 "the upload stopped arriving" (werkzeug raises it as a
    disconnect); it is a malformed request, and the server goes on serving."""
    server = make_server(create_app(load_models([run_dir])), "127.0.0.1", 0, read_timeout=5.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        raw = socket.create_connection(("127.0.0.1", server.server_port))
        raw.sendall((f"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nTransfer-Encoding: "
                     "chunked\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
                     ).encode())  # fmt: skip
        raw.settimeout(20)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        raw.close()
        answer = answer.decode("latin-1")
        assert answer.startswith("HTTP/1.1 400") and "malformed" in answer and "Traceback" not in answer, answer[:300]
        # a chunked upload cut short (the client closed its side inside a chunk) stopped arriving: still 408
        raw = socket.create_connection(("127.0.0.1", server.server_port))
        raw.sendall((f"POST /api/segment HTTP/1.1\r\nHost: 127.0.0.1:{server.server_port}\r\nTransfer-Encoding: "
                     "chunked\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n10\r\n--x\r\nabc").encode())
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(20)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        raw.close()
        assert answer.decode("latin-1").startswith("HTTP/1.1 408"), answer[:300]
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("GET", "/api/models")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.shutdown()


def test_werkzeugs_drain_of_a_timed_out_upload_logs_no_traceback(run_dir):
    """After a 408, werkzeug drains the timed-out socket, which raises "cannot read from timed out object", and
    logged "Error on request" with a traceback for every slow client (seen with six; the drain only runs into it
    when the client sends more after the timeout, a race a test cannot hit on purpose). The server's log filter
    drops exactly those records; other errors, a real 500's traceback among them, pass."""
    import logging

    server = make_server(create_app(load_models([run_dir])), "127.0.0.1", 0)
    server.server_close()
    werkzeug_log = logging.getLogger("werkzeug")

    def passes(level: int, text: str) -> bool:
        record = logging.LogRecord("werkzeug", level, __file__, 1, text, (), None)
        return all(f.filter(record) for f in werkzeug_log.filters)

    drain = 'Error on request:\nTraceback (most recent call last):\n  File "serving.py", line 359, in execute\n' \
            "    data = self.rfile.read(10_000_000)\nOSError: cannot read from timed out object"
    assert not passes(logging.ERROR, drain)
    assert passes(logging.ERROR, "Error on request:\nTraceback (most recent call last):\nZeroDivisionError: x")
    assert passes(logging.INFO, '127.0.0.1 - - "POST /api/segment HTTP/1.1" 408 -')


def test_two_images_or_two_models_in_one_request_are_refused(client):
    """One answer describes one image: with two ``image`` parts the first was segmented and the second ignored."""
    png = _png(64, 64)
    form = {"image": [(io.BytesIO(png), "a.png"), (io.BytesIO(png), "b.png")]}
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 400 and "one image" in r.json["error"]
    form = {"image": (io.BytesIO(png), "a.png"), "model": ["0", "0"]}
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 400 and "one image" in r.json["error"]
    assert _post(client, png).status_code == 200


def test_a_413_from_the_form_parser_names_the_real_limit(client):
    """A 600 KB text field (under the 1 MB upload limit of this client) trips the form parser's field limit: the
    answer said "the upload is larger than the 1 MB limit", which it is not."""
    r = _post(client, _png(64, 64), model="x" * 600_000)
    assert r.status_code == 413 and "text field" in r.json["error"] and "MB limit" not in r.json["error"]
    r = _post(client, _png(2000, 2000) + bytes(2_000_000))  # a body that is over the limit still says so
    assert r.status_code == 413 and "1 MB limit" in r.json["error"]


def test_a_chunked_upload_over_the_limit_is_told_the_size_limit(run_dir):
    """No Content-Length (chunked): werkzeug counts the body as it arrives and stops it at the limit; the answer
    names the upload limit, not the form parser's field limits."""
    app = create_app(load_models([run_dir]), max_upload_mb=1)
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png'
                b"\r\n\r\n")  # fmt: skip
        chunks = [head, _png(64, 64), *(bytes(100_000) for _ in range(20)), b"\r\n--b--\r\n"]
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("POST", "/api/segment", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 413 and "1 MB limit" in body["error"], body
        conn.close()
    finally:
        server.shutdown()


def test_sigterm_stops_serve_with_exit_code_0(tmp_path):
    """The documented end of a server: SIGTERM (or Ctrl+C) exits 0 with no traceback, after it has answered."""
    import signal
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "scunext", "serve", "--weights", "lungs", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/models")
                assert conn.getresponse().status == 200
                conn.close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
