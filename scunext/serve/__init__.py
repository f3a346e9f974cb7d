"""``scunext serve``: a local web page (and JSON API) to try trained models on an uploaded image.

Needs the ``serve`` extra (``pip install "scunext[serve]"``, which brings Flask). See ``docs/serve.md``.
"""

from __future__ import annotations

from scunext.serve.app import (
    DEFAULT_MAX_UPLOAD_MB,
    ServedModel,
    create_app,
    is_loopback,
    load_models,
    make_server,
    segment_image,
    serve,
)
from scunext.serve.upload import ACCEPTED_FORMATS, UploadError, decode_upload, sniff_format

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "ServedModel",
    "load_models",
    "create_app",
    "segment_image",
    "make_server",
    "serve",
    "is_loopback",
    "UploadError",
    "decode_upload",
    "sniff_format",
    "ACCEPTED_FORMATS",
]
