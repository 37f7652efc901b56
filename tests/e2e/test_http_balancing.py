"""End-to-end backend selection (reference §E.6): sticky sessions, the load balancing
algorithms, backup backends, connection retries and the backoff of a failing backend.

One daemon with ONE worker serves the module: balancing state (rotation, loads, backoffs) is
per worker, so a single worker makes every count exact. Each cluster has its own backends;
each backend answers with its name.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from support import configs
from support.backends import Answer, Handler, HttpBackend, Received, wait_for
from support.clients import HttpAnswer, HttpConnection
from support.daemon import DaemonProcess, free_port

from sozu_config import QueryMetrics

pytestmark = pytest.mark.e2e

SLOW = 0.4  # seconds the slow backends take to answer


def slow_answer(name: str) -> Handler:
    def handle(request: Received) -> Answer:
        return Answer(body=name.encode(), delay=SLOW)

    return handle


@dataclass
class Balancing:
    daemon: DaemonProcess
    port: int
    sticky_port: int  # listener with sticky_name = "LB"
    backends: dict[str, HttpBackend]
    dead: list[str]
    comeback_port: int

    def get(
        self, host: str, target: str = "/", headers: list[tuple[str, str]] | None = None
    ) -> HttpAnswer:
        with HttpConnection(self.port) as connection:
            return connection.request("GET", target, host=host, headers=headers)

    def served(self, *names: str) -> dict[str, int]:
        return {name: len(self.backends[name].requests) for name in names}


# cluster → (settings, [(backend name or "dead", backend settings)])
CLUSTERS: dict[str, tuple[dict[str, object], list[tuple[str, dict[str, object]]]]] = {
    "sticky": (
        {"sticky_session": True},
        [
            ("sticky-a", {"sticky_id": "s-one"}),
            ("sticky-b", {"sticky_id": "s-two"}),
            ("sticky-c", {"backend_id": "sticky-three"}),
            ("dead", {"sticky_id": "s-dead"}),
        ],
    ),
    "rr": (
        {"load_balancing": "ROUND_ROBIN"},
        [("rr-a", {}), ("rr-b", {}), ("rr-c", {})],
    ),
    "wrr": (
        {"load_balancing": "ROUND_ROBIN"},
        [("wrr-1", {"weight": 1}), ("wrr-2", {"weight": 2}), ("wrr-3", {"weight": 3})],
    ),
    "random": (
        {"load_balancing": "RANDOM"},
        [("random-light", {"weight": 50}), ("random-heavy", {"weight": 150})],
    ),
    "least": (
        {"load_balancing": "LEAST_LOADED", "load_metric": "REQUESTS"},
        [("least-fast", {}), ("least-slow", {})],
    ),
    "least_connections": (
        {"load_balancing": "LEAST_LOADED"},
        [("leastc-fast", {}), ("leastc-slow", {})],
    ),
    "p2c": (
        {"load_balancing": "POWER_OF_TWO", "load_metric": "REQUESTS"},
        [("p2c-fast-1", {}), ("p2c-fast-2", {}), ("p2c-slow", {})],
    ),
    "backup_used": ({}, [("dead", {}), ("backup-used-b", {"backup": True})]),
    "backup_idle": ({}, [("backup-idle-p", {}), ("backup-idle-b", {"backup": True})]),
    "retry": ({}, [("dead", {}), ("retry-live", {}), ("dead", {})]),
    "all_dead": ({}, [("dead", {}), ("dead", {})]),
    "refused": ({}, [("dead", {"backend_id": "refused-only"})]),
}
SLOW_BACKENDS = {"least-slow", "leastc-slow", "p2c-slow"}


@pytest.fixture(scope="module")
def balancing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancing]:
    port, sticky_port, comeback_port = free_port(), free_port(), free_port()
    names = [name for _, entries in CLUSTERS.values() for name, _ in entries if name != "dead"]
    backends = {
        name: HttpBackend(name, slow_answer(name) if name in SLOW_BACKENDS else None).start()
        for name in names
    }
    dead: list[str] = []
    try:
        a, s = f"127.0.0.1:{port}", f"127.0.0.1:{sticky_port}"
        tables = []
        for cluster, (settings, entries) in CLUSTERS.items():
            rows = []
            for name, fields in entries:
                if name == "dead":
                    dead.append(f"127.0.0.1:{free_port()}")
                    address = dead[-1]
                else:
                    address = backends[name].address
                rows.append(configs.backend(address, **fields))
            frontends = [configs.frontend(a, f"{cluster.replace('_', '-')}.test")]
            if cluster == "sticky":
                frontends.append(configs.frontend(s, "sticky.test"))
            tables.append(configs.cluster(cluster, frontends=frontends, backends=rows, **settings))
        tables.append(
            configs.cluster(
                "comeback",
                frontends=[configs.frontend(a, "comeback.test")],
                backends=[configs.backend(comeback_port)],
            )
        )
        config = configs.document(
            configs.http_listener(a),
            configs.http_listener(s, sticky_name="LB"),
            *tables,
            worker_count=1,
        )
        with DaemonProcess(tmp_path_factory.mktemp("balancing"), config).start() as daemon:
            yield Balancing(daemon, port, sticky_port, backends, dead, comeback_port)
    finally:
        for backend in backends.values():
            backend.stop()


# --------------------------------------------------------------------------- sticky sessions

STICKY_IDS = {"s-one": "sticky-a", "s-two": "sticky-b", "sticky-three": "sticky-c"}


def sticky_cookie(answer: HttpAnswer, name: str = "SOZUBALANCEID") -> str | None:
    """The sticky id set by ``answer``, checking the exact Set-Cookie syntax."""
    cookies = answer.header_values("set-cookie")
    if not cookies:
        return None
    assert len(cookies) == 1, cookies
    prefix = f"{name}="
    assert cookies[0].startswith(prefix) and cookies[0].endswith("; Path=/"), cookies
    return cookies[0][len(prefix) : -len("; Path=/")]


def test_first_answer_sets_the_sticky_cookie_of_the_backend_that_answered(
    balancing: Balancing,
) -> None:
    """sōzu ``test_stick``: ``Set-Cookie: SOZUBALANCEID=<sticky_id>; Path=/`` (the backend id
    when it has no sticky_id), naming the backend that answered."""
    seen = set()
    for _ in range(8):
        answer = balancing.get("sticky.test")
        assert answer.status == 200
        sticky = sticky_cookie(answer)
        assert sticky in STICKY_IDS, answer.raw_head
        assert STICKY_IDS[sticky] == answer.body.decode()
        seen.add(sticky)
    assert len(seen) >= 2, "the requests without cookie were not balanced"


def test_a_valid_sticky_cookie_pins_the_backend_and_sets_no_cookie(balancing: Balancing) -> None:
    """sōzu ``test_stick`` (a valid cookie forces that backend; no Set-Cookie)."""
    for sticky, name in STICKY_IDS.items():
        with HttpConnection(balancing.port) as connection:
            for _ in range(4):
                answer = connection.request(
                    "GET", "/", host="sticky.test", headers=[("Cookie", f"SOZUBALANCEID={sticky}")]
                )
                assert answer.body.decode() == name
                assert answer.header("set-cookie") is None
        # and on new connections too
        answer = balancing.get("sticky.test", headers=[("Cookie", f"SOZUBALANCEID={sticky}")])
        assert answer.body.decode() == name and answer.header("set-cookie") is None


@pytest.mark.parametrize("value", ["nope", "s-dead"], ids=["unknown", "backend_down"])
def test_an_unusable_sticky_cookie_falls_back_and_sets_a_new_one(
    balancing: Balancing, value: str
) -> None:
    """sōzu ``test_stick`` (an invalid cookie falls back to load balancing and sets a new
    cookie); a cookie naming a backend that refuses connections is unusable too."""
    for _ in range(3):
        answer = balancing.get("sticky.test", headers=[("Cookie", f"SOZUBALANCEID={value}")])
        assert answer.status == 200
        sticky = sticky_cookie(answer)
        assert sticky in STICKY_IDS
        assert STICKY_IDS[sticky] == answer.body.decode()


def test_the_sticky_cookie_is_stripped_from_the_forwarded_cookie_header(
    balancing: Balancing,
) -> None:
    """sōzu ``test_stick`` (SOZUBALANCEID is removed from the forwarded Cookie, other
    cookies stay)."""
    backend = balancing.backends["sticky-b"]
    answer = balancing.get(
        "sticky.test", "/cookies", headers=[("Cookie", "a=1; SOZUBALANCEID=s-two; b=2")]
    )
    assert answer.body == b"sticky-b"
    assert backend.requests[-1].header_values("cookie") == ["a=1; b=2"]
    answer = balancing.get("sticky.test", "/only", headers=[("Cookie", "SOZUBALANCEID=s-two")])
    assert answer.body == b"sticky-b"
    assert backend.requests[-1].target == "/only"
    assert backend.requests[-1].header("cookie") is None


def test_custom_sticky_name(balancing: Balancing) -> None:
    with HttpConnection(balancing.sticky_port) as connection:
        first = connection.request("GET", "/", host="sticky.test")
        sticky = sticky_cookie(first, "LB")
        assert sticky in STICKY_IDS and STICKY_IDS[sticky] == first.body.decode()
        pinned = connection.request(
            "GET", "/", host="sticky.test", headers=[("Cookie", "LB=s-one; SOZUBALANCEID=s-two")]
        )
        assert pinned.body == b"sticky-a" and pinned.header("set-cookie") is None
    # on this listener SOZUBALANCEID is an ordinary cookie: forwarded, not interpreted
    received = balancing.backends["sticky-a"].requests[-1]
    assert received.header_values("cookie") == ["SOZUBALANCEID=s-two"]


# --------------------------------------------------------------------------- algorithms


def test_round_robin_takes_turns(balancing: Balancing) -> None:
    names = ("rr-a", "rr-b", "rr-c")
    before = balancing.served(*names)
    bodies = []
    with HttpConnection(balancing.port) as connection:
        for _ in range(30):
            bodies.append(connection.request("GET", "/", host="rr.test").body.decode())
    counts = Counter(bodies)
    assert counts == dict.fromkeys(names, 10)
    # a rotation: no backend twice in a row
    assert all(a != b for a, b in itertools.pairwise(bodies))
    after = balancing.served(*names)
    assert {n: after[n] - before[n] for n in names} == dict.fromkeys(names, 10)


def test_weighted_round_robin_follows_the_weights(balancing: Balancing) -> None:
    counts: Counter[str] = Counter()
    with HttpConnection(balancing.port) as connection:
        for _ in range(60):
            counts[connection.request("GET", "/", host="wrr.test").body.decode()] += 1
    for name, expected in (("wrr-1", 10), ("wrr-2", 20), ("wrr-3", 30)):
        assert abs(counts[name] - expected) <= 1, counts


def test_random_follows_the_weights(balancing: Balancing) -> None:
    counts: Counter[str] = Counter()
    with HttpConnection(balancing.port) as connection:
        for _ in range(400):
            counts[connection.request("GET", "/", host="random.test").body.decode()] += 1
    # weights 1:3, expected 100 / 300; the bounds are more than 4.5 standard deviations away
    assert 60 <= counts["random-light"] <= 140, counts
    assert counts["random-light"] + counts["random-heavy"] == 400


def concurrent_load(
    balancing: Balancing, host: str, clients: int = 6, each: int = 6
) -> Counter[str]:
    """``clients`` threads each sending ``each`` requests (one connection per client)."""

    def client(_: int) -> list[str]:
        with HttpConnection(balancing.port, timeout=20) as connection:
            return [connection.request("GET", "/", host=host).body.decode() for _ in range(each)]

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients), timeout=60))
    return Counter(name for names in results for name in names)


@pytest.mark.parametrize(
    ("host", "fast", "slow"),
    [
        ("least.test", "least-fast", "least-slow"),
        ("least-connections.test", "leastc-fast", "leastc-slow"),
    ],
    ids=["requests", "connections"],
)
def test_least_loaded_sends_less_to_the_slow_backend(
    balancing: Balancing, host: str, fast: str, slow: str
) -> None:
    counts = concurrent_load(balancing, host)
    assert counts[fast] + counts[slow] == 36
    # round robin would give the slow backend half
    assert counts[slow] <= 12, counts


def test_power_of_two_sends_less_to_the_slow_backend(balancing: Balancing) -> None:
    counts = concurrent_load(balancing, "p2c.test")
    assert sum(counts.values()) == 36
    # uniform choice would give the slow backend a third
    assert counts["p2c-slow"] < min(counts["p2c-fast-1"], counts["p2c-fast-2"]), counts
    assert counts["p2c-slow"] <= 9, counts


# --------------------------------------------------------------------------- failures


def test_backup_backends_serve_only_when_no_primary_can(balancing: Balancing) -> None:
    before = balancing.served("backup-idle-b")
    for _ in range(10):
        assert balancing.get("backup-idle.test").body == b"backup-idle-p"
    assert balancing.served("backup-idle-b") == before
    for _ in range(10):
        answer = balancing.get("backup-used.test")
        assert answer.status == 200 and answer.body == b"backup-used-b"


def test_a_dead_backend_among_live_ones_costs_no_request(balancing: Balancing) -> None:
    """Connection failures are retried on another backend (reference §E.6)."""
    started = time.monotonic()
    for index in range(30):
        answer = balancing.get("retry.test", f"/{index}")
        assert answer.status == 200 and answer.body == b"retry-live", index
    assert time.monotonic() - started < 15


def test_all_backends_dead_gives_503_quickly(balancing: Balancing) -> None:
    for _ in range(3):
        started = time.monotonic()
        answer = balancing.get("all-dead.test")
        elapsed = time.monotonic() - started
        assert answer.status == 503
        assert elapsed < 2, f"503 after {elapsed:.2f} s"


def test_a_refused_connection_is_counted_once(balancing: Balancing) -> None:
    """mux ``test_backend_refused_no_error_inflation``: one request to a cluster whose only
    backend refuses connections is one 503, one connection error and one failure of that
    backend — not one per retry or per timer tick."""

    def snapshot() -> tuple[int, int, int]:
        response = balancing.daemon.send(QueryMetrics(cluster_ids=["refused"], workers=True))
        assert response.ok, response.message
        [worker] = response.content.workers.values()  # type: ignore[union-attr]
        proxying = worker["proxying"]
        backend = worker["clusters"]["refused"]["backends"]["refused-only"]
        return (
            proxying["backend.connections.error"],
            proxying["http.status"].get("503", 0),
            backend["backend.failures"],
        )

    errors, answers_503, failures = snapshot()
    assert balancing.get("refused.test").status == 503
    time.sleep(0.6)  # a few sweeps of the worker: nothing more may be counted
    assert snapshot() == (errors + 1, answers_503 + 1, failures + 1)


def test_a_backend_that_comes_back_is_used_again_after_its_backoff(balancing: Balancing) -> None:
    """The backend's address refuses connections (503), then a server starts there: after
    its backoff (1 s after a first failure, a few seconds at most after a few) the backend
    is tried again and serves."""
    assert balancing.get("comeback.test").status == 503
    revived = HttpBackend("comeback").start(port=balancing.comeback_port)
    try:

        def served() -> HttpAnswer | None:
            answer = balancing.get("comeback.test")
            return answer if answer.status == 200 else None

        answer = wait_for(served, timeout=15, interval=0.25)
        assert answer.body == b"comeback"
    finally:
        revived.stop()


def test_slow_backend_does_not_block_other_clients(balancing: Balancing) -> None:
    """A slow answer on one connection does not hold the worker: other clients are served
    meanwhile."""
    done = threading.Event()

    def slow_client() -> None:
        with HttpConnection(balancing.port) as connection:
            for _ in range(3):
                connection.request("GET", "/", host="least.test")
        done.set()

    thread = threading.Thread(target=slow_client)
    thread.start()
    started = time.monotonic()
    for _ in range(10):
        assert balancing.get("rr.test").status == 200
    assert time.monotonic() - started < SLOW * 3
    thread.join(10)
    assert done.is_set()
