"""The two forms of an access-log line (worker/access_log.py): sōzu's ascii line, and JSON."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sozu_runtime.worker.access_log import (
    AccessEntry,
    ascii_message,
    format_ascii,
    format_duration,
    format_json,
    rfc3339,
)

TIME_NS = 1_764_773_983_123_456_789  # 2025-12-03T14:59:43.123456789Z
PREFIX = "2025-12-03T14:59:43.123456Z 1764773983123456789 4242"

JSON_FIELDS = {
    "time",
    "session_id",
    "request_id",
    "cluster_id",
    "backend_id",
    "backend_address",
    "client_address",
    "client_port",
    "protocol",
    "method",
    "authority",
    "path",
    "status",
    "request_time_us",
    "service_time_us",
    "response_time_us",
    "bytes_in",
    "bytes_out",
    "user_agent",
    "tls_version",
    "tls_cipher",
    "tls_sni",
    "tags",
    "message",
    "worker",
}


def http_entry() -> AccessEntry:
    entry = AccessEntry()
    entry.time_ns = TIME_NS
    entry.session_id = "01KBKS0000SESSION000000000"
    entry.request_id = "01KBKS0000REQUEST000000001"
    entry.cluster_id = "api"
    entry.backend_id = "api-1"
    entry.backend_address = "10.0.0.2:8080"
    entry.client_address = "192.0.2.7"
    entry.client_port = 51234
    entry.protocol = "HTTP"
    entry.method = "GET"
    entry.authority = "api.example.com"
    entry.path = "/v1/items?page=2"
    entry.status = 200
    entry.request_time_us = 23_456
    entry.service_time_us = 312
    entry.response_time_us = 21_000
    entry.bytes_in = 187
    entry.bytes_out = 5_120
    return entry


def tcp_entry() -> AccessEntry:
    entry = AccessEntry()
    entry.time_ns = TIME_NS
    entry.session_id = "01KBKS0000SESSION000000002"
    entry.cluster_id = "db"
    entry.backend_id = "db-1"
    entry.backend_address = "10.0.0.9:5432"
    entry.client_address = "192.0.2.8"
    entry.client_port = 40000
    entry.protocol = "TCP"
    entry.request_time_us = 12_500_000
    entry.service_time_us = 45
    entry.response_time_us = 1_500
    entry.bytes_in = 900
    entry.bytes_out = 12_000
    return entry


# ---------------------------------------------------------------------------------- ascii


def test_an_http_line_is_sozus_line_exactly() -> None:
    assert format_ascii(http_entry(), "WRK-01", pid=4242) == (
        f"{PREFIX} INFO-ACCESS  WRK-01\t"
        "[01KBKS0000SESSION000000000 01KBKS0000REQUEST000000001 api api-1] "
        "192.0.2.7:51234 10.0.0.2:8080 23ms/312μs/21ms/-/- 187 5120 [] None HTTP "
        "api.example.com GET /v1/items?page=2 200"
    )


def test_a_tcp_line_has_one_dash_for_the_http_endpoint() -> None:
    assert format_ascii(tcp_entry(), "WRK-00", pid=4242) == (
        f"{PREFIX} INFO-ACCESS  WRK-00\t"
        "[01KBKS0000SESSION000000002 - db db-1] 192.0.2.8:40000 10.0.0.9:5432 "
        "12s/45μs/1500μs/-/- 900 12000 [] None TCP -"
    )


def test_what_is_unknown_is_a_dash() -> None:
    entry = AccessEntry()
    entry.session_id = "S"
    entry.protocol = "HTTP"
    entry.status = 400
    entry.message = "invalid request head"
    assert ascii_message(entry) == (
        "[S - - -] - - 0ns/0ns/-/-/- 0 0 [] None HTTP - - - 400 | invalid request head"
    )


def test_the_level_is_error_for_a_5xx_answer_of_the_proxy_only() -> None:
    backend_503 = http_entry()
    backend_503.status = 503  # the backend's own answer: it responded
    assert "INFO-ACCESS  WRK-00\t" in format_ascii(backend_503, "WRK-00", pid=1)
    no_backend = http_entry()
    no_backend.status, no_backend.response_time_us = 503, -1
    assert "ERROR-ACCESS WRK-00\t" in format_ascii(no_backend, "WRK-00", pid=1)
    said_why = http_entry()
    said_why.status, said_why.message = 502, "invalid response head"
    line = format_ascii(said_why, "WRK-00", pid=1)
    assert "ERROR-ACCESS WRK-00\t" in line and line.endswith(" 502 | invalid response head")
    not_found = http_entry()
    not_found.status, not_found.message, not_found.response_time_us = 404, "no route", -1
    assert "INFO-ACCESS  WRK-00\t" in format_ascii(not_found, "WRK-00", pid=1)


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0ns"),
        (1, "1000ns"),
        (9, "9000ns"),
        (10, "10μs"),
        (9_999, "9999μs"),
        (10_000, "10ms"),
        (10_999, "10ms"),
        (9_999_999, "9999ms"),
        (10_000_000, "10s"),
        (125_900_000, "125s"),
        (-1, "-"),
    ],
)
def test_durations_change_unit_at_ten(us: int, text: str) -> None:
    assert format_duration(us) == text


def test_tags_are_sorted_and_the_user_agent_is_one_word() -> None:
    entry = http_entry()
    entry.tags = {"team": "web", "env": "prod"}
    entry.user_agent = "Mozilla/5.0 (X11; Linux x86_64) [en-GB] Firefox/128.0"
    agent = "user-agent=Mozilla/5.0_(X11;_Linux_x86_64)_{en-GB}_Firefox/128.0"
    assert f" 187 5120 [env=prod, team=web, {agent}] None HTTP " in ascii_message(entry)
    entry.tags = {}
    assert f" 187 5120 [{agent}] None HTTP " in ascii_message(entry)
    entry.user_agent = ""
    entry.tags = {"env": "prod"}
    assert " 187 5120 [env=prod] None HTTP " in ascii_message(entry)


def test_addresses_and_tls_protocol() -> None:
    entry = http_entry()
    entry.client_address, entry.client_port = "2001:db8::7", 443
    entry.protocol, entry.tls_version = "HTTPS", "TLSv1.3"
    message = ascii_message(entry)
    assert "] [2001:db8::7]:443 10.0.0.2:8080 " in message
    assert " None HTTPS-TLS1.3 api.example.com GET " in message


def test_rfc3339_time_has_microseconds_in_utc() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(TIME_NS) == "2025-12-03T14:59:43.123456Z"
    moment = dt.datetime(2031, 2, 28, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    ns = int(moment.timestamp()) * 1_000_000_000 + 999_999_000
    assert rfc3339(ns) == "2031-02-28T23:59:59.999999Z"


# ---------------------------------------------------------------------------------- json


def test_json_round_trip_with_every_field() -> None:
    entry = http_entry()
    entry.protocol = "HTTPS"
    entry.tls_version, entry.tls_cipher, entry.tls_sni = (
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
        "api.example.com",
    )
    entry.user_agent = 'curl/8.5 "quoted" \\ back [x]'
    entry.tags = {"env": "prod", "note": 'a "b" c\nd', "unicode": "café ☕"}
    entry.status, entry.message = 504, "backend timeout"
    line = format_json(entry, "WRK-03")
    assert "\n" not in line and line.isascii()
    fields = json.loads(line)
    assert set(fields) == JSON_FIELDS
    assert line == json.dumps(fields, separators=(",", ":"))  # json's own text, field order
    assert fields == {
        "time": "2025-12-03T14:59:43.123456Z",
        "session_id": "01KBKS0000SESSION000000000",
        "request_id": "01KBKS0000REQUEST000000001",
        "cluster_id": "api",
        "backend_id": "api-1",
        "backend_address": "10.0.0.2:8080",
        "client_address": "192.0.2.7",
        "client_port": 51234,
        "protocol": "HTTPS",
        "method": "GET",
        "authority": "api.example.com",
        "path": "/v1/items?page=2",
        "status": 504,
        "request_time_us": 23_456,
        "service_time_us": 312,
        "response_time_us": 21_000,
        "bytes_in": 187,
        "bytes_out": 5_120,
        "user_agent": 'curl/8.5 "quoted" \\ back [x]',
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "tls_sni": "api.example.com",
        "tags": {"env": "prod", "note": 'a "b" c\nd', "unicode": "café ☕"},
        "message": "backend timeout",
        "worker": "WRK-03",
    }


def test_json_unknown_values_are_null() -> None:
    fields = json.loads(format_json(AccessEntry(), ""))
    assert set(fields) == JSON_FIELDS
    numbers = {"request_time_us", "service_time_us", "bytes_in", "bytes_out"}
    assert {k for k, v in fields.items() if v is not None} == numbers | {"tags"}
    assert fields["tags"] == {}


def test_json_tcp_entry_has_no_http_fields() -> None:
    fields = json.loads(format_json(tcp_entry(), "WRK-00"))
    assert fields["protocol"] == "TCP"
    assert [fields[k] for k in ("method", "authority", "path", "status")] == [None] * 4
    assert (fields["request_time_us"], fields["response_time_us"]) == (12_500_000, 1_500)
    assert fields["client_address"] == "192.0.2.8" and fields["client_port"] == 40000


def test_a_path_from_the_wire_is_kept_byte_for_byte() -> None:
    entry = http_entry()
    entry.path = "/caf\xe9/\x7f?q=\x01"  # bytes decoded as latin-1 by the parser
    assert json.loads(format_json(entry, "W"))["path"] == entry.path


TEXT_FIELDS = (
    "session_id",
    "request_id",
    "cluster_id",
    "backend_id",
    "backend_address",
    "client_address",
    "protocol",
    "method",
    "authority",
    "path",
    "user_agent",
    "tls_version",
    "tls_cipher",
    "tls_sni",
    "message",
)


@given(
    texts=st.lists(st.text(), min_size=len(TEXT_FIELDS), max_size=len(TEXT_FIELDS)),
    tags=st.dictionaries(st.text(), st.text(), max_size=3),
    numbers=st.lists(st.integers(0, 2**53), min_size=6, max_size=6),
)
def test_any_entry_is_one_line_of_json_that_reads_back(
    texts: list[str], tags: dict[str, str], numbers: list[int]
) -> None:
    entry = AccessEntry()
    for name, text in zip(TEXT_FIELDS, texts, strict=True):
        setattr(entry, name, text)
    entry.tags = tags
    (
        entry.client_port,
        entry.status,
        entry.request_time_us,
        entry.service_time_us,
        entry.bytes_in,
        entry.bytes_out,
    ) = numbers
    line = format_json(entry, "WRK-00")
    assert "\n" not in line and "\r" not in line and line.isascii()
    fields = json.loads(line)
    assert {name: fields[name] for name in TEXT_FIELDS} == {
        name: text or None for name, text in zip(TEXT_FIELDS, texts, strict=True)
    }
    assert fields["tags"] == tags
    assert fields["bytes_out"] == numbers[5] and fields["client_port"] == (numbers[0] or None)


def test_field_value_reads_a_raw_head() -> None:
    from sozu_runtime.worker.access_log import field_value

    head = b"GET / HTTP/1.1\r\nHost: a\r\nUSER-AGENT:  curl/8 \r\nX: y\r\n\r\n"
    assert field_value(head, b"user-agent") == "curl/8"
    assert field_value(head, b"referer") == ""
