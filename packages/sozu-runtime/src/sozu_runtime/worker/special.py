"""What a ``special`` route answers by itself, before any backend is involved: redirects
(with the frontend's scheme, host, port and path rewrites) and authentication (sōzu's
``redirect = unauthorized`` and ``required_auth`` with HTTP basic credentials).

Plain functions of the route and the request head: the session writes the answer they decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sozu_config.models import RedirectPolicy, RedirectScheme

from .routes import check_basic_auth

if TYPE_CHECKING:
    from . import h1
    from .routes import Route

__all__ = ["redirect_location", "special_answer"]

_REDIRECT_STATUS: Final = {
    RedirectPolicy.PERMANENT: 301,
    RedirectPolicy.FOUND: 302,
    RedirectPolicy.PERMANENT_REDIRECT: 308,
}


def special_answer(
    route: Route, host: bytes, head: h1.RequestHead, tls: bool
) -> tuple[int, str] | None:
    """(status, Location or "") a special ``route`` answers the request with (received on a
    TLS listener when ``tls``), or None when the request goes on to a backend."""
    frontend = route.frontend
    policy = frontend.redirect
    if policy is RedirectPolicy.UNAUTHORIZED:
        return 401, ""
    if policy is not RedirectPolicy.FORWARD:
        if frontend.redirect_scheme is RedirectScheme.USE_HTTPS:
            scheme = "https"
        elif frontend.redirect_scheme is RedirectScheme.USE_HTTP:
            scheme = "http"
        else:
            scheme = "https" if tls else "http"
        target_host = frontend.rewrite_host.encode() if frontend.rewrite_host else host
        target = frontend.rewrite_path.encode() if frontend.rewrite_path else head.target
        port = frontend.rewrite_port
        if port is None and route.cluster is not None:
            port = route.cluster.https_redirect_port if scheme == "https" else None
        location = redirect_location(scheme, target_host, port, target)
        return _REDIRECT_STATUS[policy], location
    if frontend.required_auth:
        cluster = route.cluster
        authorization = None
        for name, value in head.headers:
            if name.lower() == b"authorization":
                authorization = value
                break
        if cluster is None or not check_basic_auth(authorization, cluster.authorized):
            return 401, ""
    return None


def redirect_location(scheme: str, host: bytes, port: int | None, target: bytes) -> str:
    """The Location of a redirect (the port left out when it is the scheme's default)."""
    default = 443 if scheme == "https" else 80
    authority = host.decode("latin-1")
    if port is not None and port != default:
        authority = f"{authority}:{port}"
    return f"{scheme}://{authority}{target.decode('latin-1')}"
