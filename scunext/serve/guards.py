"""Request checks of the web app that do not depend on Flask: the ``Host`` name and the cross-origin refusal.

* ``Host``: bound to a loopback address, the app only answers requests addressed to a loopback name, which defeats
  DNS rebinding (a page at ``evil.example`` whose name later resolves to 127.0.0.1).
* Cross-origin POSTs: a page from another origin (another site, or another port on this machine) can make the
  user's browser send a form or a ``fetch`` to the app. Browsers say where such a request comes from in
  ``Sec-Fetch-Site`` and ``Origin``; a state-changing request whose ``Sec-Fetch-Site`` is not ``same-origin`` (or
  ``none``: typed or bookmarked by the user) or whose ``Origin`` is not the app's own ``scheme://host:port`` is
  refused. A request with neither header (``curl``, scripts) is not from a browser page and is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["host_name", "cross_origin_refusal", "SAFE_METHODS"]

#: methods that change nothing and are never refused as cross-origin
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


def host_name(host: str) -> str:
    """The name part of a ``Host`` header (``host``, ``host:port``, ``[v6]`` or ``[v6]:port``), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address
        return f"[{host}]"
    return host.partition(":")[0]


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` with the scheme's default port filled in; ``None`` when unparseable."""
    scheme = scheme.lower()
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if port is None:
        return None
    return scheme, parts.hostname.lower(), port


def cross_origin_refusal(method: str, headers: Mapping[str, str], scheme: str, host: str) -> str | None:
    """Why a request must be refused as cross-origin (a one-line message), or ``None`` to accept it.

    Args:
        method: the HTTP method; :data:`SAFE_METHODS` are always accepted.
        headers: the request headers (``Origin`` and ``Sec-Fetch-Site`` are read, case-insensitively as Flask's
            headers are).
        scheme: ``"http"`` or ``"https"``, how the app is served.
        host: the request's ``Host`` header (the app's own ``host:port`` as the client addressed it).
    """
    if method.upper() in SAFE_METHODS:
        return None
    site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site and site not in _ALLOWED_FETCH_SITES:
        return "cross-origin request refused (sent by a page of another site); use the page served by this server"
    origin = headers.get("Origin")
    if origin is None:
        return None  # not sent by a browser page (curl, scripts): nothing to check
    origin = origin.strip()
    own = _origin_tuple(scheme, host)
    if origin.lower() == "null" or own is None:
        return "cross-origin request refused (opaque origin); use the page served by this server"
    parts = urlsplit(origin)
    theirs = _origin_tuple(parts.scheme, parts.netloc) if parts.scheme and not parts.path.strip("/") else None
    if theirs != own:
        return "cross-origin request refused (the Origin is not this server); use the page served by this server"
    return None
