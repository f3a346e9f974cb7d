"""``scunext serve``: the JSON API and the page through Flask's test client (no network, no browser)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask", reason="the 'serve' extra (Flask) is not installed")

from scunext.cli.main import main  # noqa: E402
from scunext.data import read_image, sample_dir  # noqa: E402
from scunext.deploy.predictor import Predictor  # noqa: E402
from scunext.serve import create_app, decode_upload, load_models, sniff_format  # noqa: E402

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


def _post(client, data: bytes, filename: str = "upload.png", **fields):
    form = {"image": (io.BytesIO(data), filename), **fields}
    return client.post("/api/segment", data=form, content_type="multipart/form-data")


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
        (b"just some text, renamed to .png\n", 415, "not a PNG or JPEG"),
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
    assert body["max_upload_mb"] == 10 and body["formats"] == ["PNG", "JPEG"]
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
    image, fmt = decode_upload(data)
    assert fmt == "jpeg" and sniff_format(XRAY_IMAGE.read_bytes()) == "png"
    np.testing.assert_array_equal(image, read_image(ISIC_IMAGE))


def test_cli_user_errors(run_dir, capsys):
    assert main(["serve"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    assert main(["serve", str(run_dir.parent / "missing"), "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err


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

    def fake_make_server(app, host, port):
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
