"""``scunext serve``: a local web page (and JSON API) to try trained models on an uploaded image.

Needs the ``serve`` extra (``pip install "scunext[serve]"``, which brings Flask). See ``docs/serve.md``.
"""

from __future__ import annotations

from scunext.serve.app import DEFAULT_MAX_UPLOAD_MB, SERVER_HEADER, create_app, is_loopback, make_server, serve
from scunext.serve.models import ServedModel, load_models
from scunext.serve.pool import DEFAULT_QUEUE, DEFAULT_WORKERS, WorkPool
from scunext.serve.segment import DISPLAY_MAX_SIDE, WORK_MAX_PIXELS, segment, segment_image, segment_upload
from scunext.serve.upload import ACCEPTED_FORMATS, DecodedUpload, UploadError, decode_upload, sniff_format

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_WORKERS",
    "DEFAULT_QUEUE",
    "DISPLAY_MAX_SIDE",
    "WORK_MAX_PIXELS",
    "SERVER_HEADER",
    "ServedModel",
    "load_models",
    "create_app",
    "segment",
    "segment_image",
    "segment_upload",
    "make_server",
    "serve",
    "is_loopback",
    "WorkPool",
    "UploadError",
    "DecodedUpload",
    "decode_upload",
    "sniff_format",
    "ACCEPTED_FORMATS",
]
