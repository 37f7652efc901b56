"""The fleet's logic without etcd: source URLs, the paths a published document may name, a
snapshot checked as a file is (its messages naming the keys in etcd), node statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from sozu_cli.fleet import FleetError, FleetSource, NodeStatus, Snapshot, load_snapshot
from sozu_cli.fleet.source import check_relative
from sozu_cli.fleet.status import FleetStatus
from sozu_config.config import load_checked

SOURCE = FleetSource.parse("etcd://10.0.0.5:2379/sozu/prod")


def test_a_source_url_gives_members_and_keys() -> None:
    assert SOURCE.members == (("10.0.0.5", 2379),)
    assert SOURCE.endpoints == ["http://10.0.0.5:2379"]
    assert SOURCE.config_key == "/sozu/prod/config.toml"
    assert SOURCE.file_key("certs/a.pem") == "/sozu/prod/files/certs/a.pem"
    assert SOURCE.status_key("web-1") == "/sozu/prod/status/web-1"
    assert SOURCE.concerns_configuration("/sozu/prod/files/certs/a.pem")
    assert not SOURCE.concerns_configuration("/sozu/prod/status/web-1")
    first, end = SOURCE.configuration_range
    for key in ("/sozu/prod/config.toml", "/sozu/prod/files/a.pem", "/sozu/prod/files/z/z"):
        assert first <= key < end
    assert not first <= "/sozu/prod/status/web-1" < end
    several = FleetSource.parse("etcd://a,b:2380,[::1]:2381/p/")
    assert several.members == (("a", 2379), ("b", 2380), ("::1", 2381))
    assert several.url == "etcd://a:2379,b:2380,[::1]:2381/p"
    assert FleetSource.parse(several.url) == several


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a/p", "is not an etcd source"),
        ("etcd:///p", "names no host"),
        ("etcd://a:x/p", "is not a number in 1-65535"),
        ("etcd://a", "names no usable key prefix"),
        ("etcd://a/p/../q", "names no usable key prefix"),
        ("etcd://a/p q", "names no usable key prefix"),
        ("etcd://a/p?x=1", "no '?' or '#' part"),
        ("etcd://user@a/p", "is not HOST:PORT"),
    ],
)
def test_bad_source_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(FleetError, match=message.replace("?", r"\?")):
        FleetSource.parse(url)


def test_only_paths_below_the_document_can_be_published() -> None:
    assert check_relative("certs/site.pem") is None
    assert check_relative("./503.http") is None
    assert "absolute path" in str(check_relative("/etc/ssl/site.pem"))
    assert "leaves the document's folder" in str(check_relative("certs/../../site.pem"))


def test_a_snapshot_is_checked_as_the_file_it_was_published_from(tmp_path: Path) -> None:
    template = "HTTP/1.1 503 Service Unavailable\r\n\r\nbusy"
    text = (
        'worker_count = 1\n[[listeners]]\nprotocol = "http"\naddress = "127.0.0.1:8080"\n'
        '[clusters.app]\nprotocol = "http"\nanswer_503 = "answers/503.http"\n'
    )
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / "503.http").write_text(template)
    (tmp_path / "config.toml").write_text(text)
    snapshot = Snapshot(SOURCE, 7, text, {"answers/503.http": template.encode()}, revision=7)
    loaded = load_snapshot(snapshot)
    assert loaded.errors == ()
    assert loaded.config is not None
    assert loaded.config.state == load_checked(tmp_path / "config.toml").state
    assert not loaded.socket_named
    assert loaded.config.path == Path("/sozu/prod/config.toml")


def test_a_snapshot_that_does_not_check_names_the_keys_in_etcd() -> None:
    text = (
        'worker_count = 1\n[[listeners]]\nprotocol = "https"\naddress = "127.0.0.1:8443"\n'
        '[clusters.app]\nprotocol = "http"\nanswer_503 = "503.http"\nfrontends = [{ address = '
        '"127.0.0.1:8443", hostname = "a.example.com", certificate = "certs/a.pem", '
        'key = "certs/a.key" }]\n'
    )
    files = {"503.http": b"HTTP/1.1 503 x\r\n\r\n", "certs/a.pem": b"junk", "certs/a.key": b"junk"}
    loaded = load_snapshot(Snapshot(SOURCE, 3, text, files, revision=3))
    assert loaded.config is None
    assert loaded.errors
    for error in loaded.errors:
        assert error.startswith("etcd://10.0.0.5:2379/sozu/prod/config.toml: [clusters.app"), error
        assert "sozu-fleet-" not in error, error
    assert any("etcd://10.0.0.5:2379/sozu/prod/files/certs/a.pem" in e for e in loaded.errors)
    text = 'worker_count = 1\n[clusters.app]\nprotocol = "http"\nanswer_503 = "503.http"\n'
    missing = load_snapshot(Snapshot(SOURCE, 3, text, {}, revision=3))
    assert missing.errors == (
        "etcd://10.0.0.5:2379/sozu/prod/config.toml names '503.http', and "
        "/sozu/prod/files/503.http is not in etcd (publish the document with the files it names)",
    )
    nothing = load_snapshot(Snapshot(SOURCE, 1, None))
    assert nothing.errors == ("nothing is published at etcd://10.0.0.5:2379/sozu/prod/config.toml",)


def test_node_statuses_round_trip_and_say_who_is_in_sync() -> None:
    good = NodeStatus("web-1", "/run/sozu.sock", revision=9, applied_at="t", updated_at="u")
    assert NodeStatus.from_json("web-1", good.to_json().encode()) == good
    behind = NodeStatus("web-2", "/run/sozu.sock", revision=8)
    failing = NodeStatus("web-3", "/run/sozu.sock", revision=9, error="refused")
    fleet = FleetStatus(SOURCE, 9, (good, behind, failing))
    assert [fleet.in_sync(node) for node in fleet.nodes] == [True, False, False]
    assert fleet.to_json()["in_sync"] is False
    unreadable = NodeStatus.from_json("web-4", b"[1, 2]")
    assert unreadable.error is not None and "unreadable status" in unreadable.error
