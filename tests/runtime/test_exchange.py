"""One request/response exchange (worker/exchange.py), without sockets."""

from __future__ import annotations

from sozu_config.models import Cluster, HttpFrontend
from sozu_runtime.worker import h1
from sozu_runtime.worker.balancing import Backend
from sozu_runtime.worker.exchange import Exchange
from sozu_runtime.worker.routes import ClusterRuntime, Route

RAW = b"GET /path?q HTTP/1.1\r\nHost: example.com\r\n\r\n"


def used_exchange() -> Exchange:
    exchange = Exchange()
    head = h1.parse_request_head(RAW, 4096)
    assert head is not None
    exchange.begin(b"RID1", head)
    cluster = ClusterRuntime(Cluster(cluster_id="app"))
    exchange.route = Route(
        HttpFrontend(address="127.0.0.1:80", hostname="example.com", cluster_id="app"), cluster
    )
    exchange.cluster = cluster
    exchange.sticky = "b1"
    exchange.set_cookie = b"Set-Cookie: x\r\n"
    exchange.attempts = 2
    exchange.tried.append(Backend("app", "b1", "127.0.0.1:1"))
    exchange.replay = b"GET / HTTP/1.1\r\n\r\n"
    exchange.response_started = True
    return exchange


def test_begin_takes_the_head_facts() -> None:
    exchange = used_exchange()
    assert (exchange.method, exchange.version, exchange.upgrade) == (b"GET", 11, None)
    assert exchange.request_head() is exchange.head


def test_reset_forgets_every_per_request_fact_but_the_id() -> None:
    exchange = used_exchange()
    tried = exchange.tried
    exchange.reset()
    fresh = Exchange()
    # every attribute, compiled or not (a compiled class has no __slots__ to list)
    names = [name for name in dir(fresh) if not name.startswith("__")]
    assert "request_id" in names and "method" in names
    for name in names:
        if name in ("request_id", "tried") or callable(getattr(fresh, name)):
            continue
        assert getattr(exchange, name) == getattr(fresh, name), name
    assert exchange.tried == [] and exchange.tried is tried  # the list is reused
    assert exchange.request_id == b"RID1"  # names the last exchange until the next one
    assert exchange.request_head() is None


def test_the_fast_path_head_is_parsed_on_demand() -> None:
    exchange = Exchange()
    exchange.fast_raw = RAW
    head = exchange.request_head()
    assert head is not None and head.target == b"/path?q"
    assert exchange.head is head
    broken = Exchange()
    broken.fast_raw = b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"
    assert broken.request_head() is None
