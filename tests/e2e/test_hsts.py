"""HTTP Strict Transport Security (RFC 6797; reference §B.3, §B.4, §E.3; sōzu
``hsts_tests.rs``): the ``hsts`` table of an HTTPS listener, overridden by a frontend's, adds
``Strict-Transport-Security`` to proxied answers and to the proxy's own (redirects, 401, 404,
5xx) — exactly once: a backend's own header is kept unless ``force_replace_backend``. Refused
on plain HTTP listeners and frontends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import configs
from support.backends import Answer, HttpBackend, Received
from support.certs import make_certificate
from support.clients import HttpAnswer, HttpConnection, tls_client_context
from support.daemon import DaemonProcess, free_port

from sozu_config import AddHttpFrontend, HttpFrontend, load_config_text
from sozu_config.config import ConfigError
from sozu_config.models import Hsts

pytestmark = pytest.mark.e2e

LISTENER_HSTS = "max-age=31536000"
CUSTOM = {"enabled": True, "max_age": 600, "include_subdomains": True, "preload": True}
FORCED = {"enabled": True, "max_age": 60, "force_replace_backend": True}
BIG = bytes(range(256)) * 4096  # 1 MiB: many reads and writes on both sides


def backend_answer(request: Received) -> Answer:
    if request.target == "/own-sts":
        return Answer(headers=[("Strict-Transport-Security", "max-age=5")], body=b"own")
    if request.target == "/big":
        return Answer(body=BIG)
    return Answer(body=b"ok")


@dataclass
class HstsProxy:
    https: int
    http: int
    daemon: DaemonProcess

    def get(self, host: str, target: str = "/") -> HttpAnswer:
        with HttpConnection(
            self.https, tls=tls_client_context(), server_hostname="hsts.test"
        ) as connection:
            return connection.request("GET", target, host=host)


@pytest.fixture(scope="module")
def hsts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HstsProxy]:
    directory = tmp_path_factory.mktemp("hsts")
    made = make_certificate("hsts.test", "*.hsts.test")
    (directory / "cert.pem").write_text(made.cert_pem)
    (directory / "key.pem").write_text(made.key_pem)
    https, http, closed = free_port(), free_port(), free_port()
    a = f"127.0.0.1:{https}"
    with HttpBackend("hsts", backend_answer) as backend:
        config = configs.document(
            configs.https_listener(
                a,
                certificate="cert.pem",
                key="key.pem",
                strict_sni_binding=False,
                hsts={"enabled": True},
            ),
            configs.http_listener(http),
            configs.cluster(
                "app",
                frontends=[
                    configs.frontend(a, "app.hsts.test"),
                    configs.frontend(a, "off.hsts.test", hsts={"enabled": False}),
                    configs.frontend(a, "custom.hsts.test", hsts=CUSTOM),
                    configs.frontend(a, "forced.hsts.test", hsts=FORCED),
                    configs.frontend(a, "redirect.hsts.test", redirect="permanent"),
                    configs.frontend(a, "auth.hsts.test", required_auth=True),
                    configs.frontend(http, "plain.hsts.test"),
                ],
                backends=[configs.backend(backend.address)],
                authorized_hashes=[f"admin:{hashlib.sha256(b'secret').hexdigest()}"],
            ),
            configs.http_cluster("down", a, "down.hsts.test", [closed]),
            worker_count=1,
        )
        with DaemonProcess(directory, config).start() as daemon:
            yield HstsProxy(https, http, daemon)


def sts(answer: HttpAnswer) -> list[str]:
    return answer.header_values("strict-transport-security")


def test_hsts_on_https_backend_200(hsts: HstsProxy) -> None:
    answer = hsts.get("app.hsts.test")
    assert answer.status == 200 and answer.body == b"ok"
    assert sts(answer) == [LISTENER_HSTS]


def test_a_frontend_setting_replaces_the_listener_s(hsts: HstsProxy) -> None:
    assert sts(hsts.get("off.hsts.test")) == []
    assert sts(hsts.get("custom.hsts.test")) == ["max-age=600; includeSubDomains; preload"]


def test_a_backend_s_own_header_is_kept_unless_replaced(hsts: HstsProxy) -> None:
    kept = hsts.get("app.hsts.test", "/own-sts")
    assert kept.body == b"own" and sts(kept) == ["max-age=5"]
    replaced = hsts.get("forced.hsts.test", "/own-sts")
    assert replaced.body == b"own" and sts(replaced) == ["max-age=60"]


def test_hsts_multi_frame_body_no_leak_no_duplicate_sts(hsts: HstsProxy) -> None:
    """A 1 MiB body crosses in many reads: one header, the body intact, and the next
    request on the connection in step."""
    with HttpConnection(
        hsts.https, tls=tls_client_context(), server_hostname="hsts.test"
    ) as connection:
        big = connection.request("GET", "/big", host="app.hsts.test")
        assert big.body == BIG
        assert sts(big) == [LISTENER_HSTS]
        after = connection.request("GET", "/", host="app.hsts.test")
        assert after.body == b"ok" and sts(after) == [LISTENER_HSTS]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("redirect.hsts.test", 301),  # sōzu test_hsts_on_https_redirect_301
        ("auth.hsts.test", 401),  # sōzu test_hsts_on_https_unauthorized_401
        ("down.hsts.test", 503),  # sōzu test_hsts_on_https_unreachable_503
        ("unknown.hsts.test", 404),
    ],
)
def test_hsts_on_the_proxy_s_own_answers(hsts: HstsProxy, host: str, status: int) -> None:
    answer = hsts.get(host)
    assert answer.status == status
    assert sts(answer) == [LISTENER_HSTS]


def test_never_on_plain_http(hsts: HstsProxy) -> None:
    with HttpConnection(hsts.http) as connection:
        answer = connection.request("GET", "/", host="plain.hsts.test")
    assert answer.status == 200 and sts(answer) == []


def test_hsts_on_http_frontend_rejected(hsts: HstsProxy) -> None:
    """sōzu ``test_hsts_on_http_frontend_rejected`` and
    ``test_hsts_explicit_disable_on_http_rejected``: by the daemon, and in a file."""
    for enabled in (True, False):
        refused = hsts.daemon.send(
            AddHttpFrontend(
                frontend=HttpFrontend(
                    address=f"127.0.0.1:{hsts.http}",
                    hostname="more.hsts.test",
                    cluster_id="app",
                    hsts=Hsts(enabled=enabled),
                )
            )
        )
        assert not refused.ok and "only valid on https frontends" in refused.message
        with pytest.raises(ConfigError, match="only valid on https"):
            load_config_text(
                '[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\n'
                f"hsts = {{ enabled = {'true' if enabled else 'false'} }}\n",
                base_dir=Path("/"),
            )
