"""The protections of an HTTP/2 connection (worker/h2_guard.py), on frames built with
hyperframe, without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from sozu_runtime.worker.h2_guard import ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR, Guard, H2Limits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def guard(**knobs: int) -> Guard:
    return Guard(H2Limits(SimpleNamespace(**knobs)))


def feed(g: Guard, data: bytes, now: float = 100.0, step: int = 0) -> str:
    if not step:
        return g.frames(data, now)
    for start in range(0, len(data), step):
        found = g.frames(data[start : start + step], now)
        if found:
            return found
    return ""


def test_defaults_are_soezus() -> None:
    limits = H2Limits(SimpleNamespace())
    assert (limits.concurrent_streams, limits.rst_per_second, limits.settings_per_second) == (
        100,
        100,
        50,
    )
    assert (limits.continuation_frames, limits.header_fields, limits.graceful_deadline) == (
        20,
        128,
        5.0,
    )
    assert H2Limits(SimpleNamespace(h2_max_concurrent_streams=7)).concurrent_streams == 7


@pytest.mark.parametrize("step", [0, 1, 5])
def test_ping_flood_is_found_past_the_limit_whatever_the_reads(step: int) -> None:
    g = guard(h2_max_ping_per_window=10)
    pings = b"".join(PingFrame(0, opaque_data=b"12345678").serialize() for _ in range(10))
    assert feed(g, PREFACE + pings, step=step) == ""
    assert feed(g, PingFrame(0, opaque_data=b"abcdefgh").serialize(), step=step) == "PING flood"


def test_acks_are_not_counted_and_the_count_restarts_each_second() -> None:
    g = guard(h2_max_ping_per_window=2, h2_max_settings_per_window=1)
    ack = PingFrame(0, opaque_data=b"12345678")
    ack.flags.add("ACK")
    settings_ack = SettingsFrame(0)
    settings_ack.flags.add("ACK")
    data = PREFACE + ack.serialize() * 5 + settings_ack.serialize() * 5
    assert g.frames(data, 100.0) == ""
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    assert g.frames(ping * 2, 100.2) == ""
    assert g.frames(ping, 101.5) == ""  # a new second
    assert g.frames(ping * 2, 101.6) == "PING flood"


def test_rapid_reset_per_second_and_over_the_life() -> None:
    g = guard(h2_max_rst_stream_per_window=3, h2_max_rst_stream_lifetime=5)
    reset = RstStreamFrame(1).serialize()
    assert g.frames(PREFACE + reset * 3, 10.0) == ""
    assert g.frames(reset * 2, 11.0) == ""
    assert g.frames(reset, 12.0) == "too many RST_STREAM over the connection's life"
    g = guard(h2_max_rst_stream_per_window=3)
    assert g.frames(PREFACE + reset * 4, 10.0) == "RST_STREAM flood (rapid reset)"


def test_continuations_of_one_header_block_are_counted() -> None:
    g = guard(h2_max_continuation_frames=3)
    headers = HeadersFrame(1, data=b"\x82").serialize()
    cont = ContinuationFrame(1, data=b"\x00").serialize()
    # two header blocks of three continuations each: fine
    assert g.frames(PREFACE + headers + cont * 3 + headers + cont * 3, 1.0) == ""
    assert g.frames(cont, 1.0) == "CONTINUATION flood"


def test_empty_data_and_window_updates_on_the_connection() -> None:
    g = guard(h2_max_empty_data_per_window=2, h2_max_window_update_stream0_per_window=2)
    empty = DataFrame(1).serialize()
    last = DataFrame(1)
    last.flags.add("END_STREAM")
    full = DataFrame(1, data=b"x" * 100).serialize()
    stream_update = WindowUpdateFrame(1, window_increment=1).serialize()
    update = WindowUpdateFrame(0, window_increment=1).serialize()
    data = PREFACE + empty * 2 + last.serialize() * 5 + full * 5 + stream_update * 5 + update * 2
    assert g.frames(data, 1.0) == ""
    assert g.frames(empty, 1.0) == "empty DATA flood"
    g = guard(h2_max_window_update_stream0_per_window=2)
    assert g.frames(PREFACE + update * 2, 1.0) == ""
    assert g.frames(update, 1.0) == "WINDOW_UPDATE flood"


def test_a_large_frame_split_across_reads_is_skipped_by_its_length() -> None:
    g = guard(h2_max_ping_per_window=0)
    # the payload holds bytes that would read as PING frame headers if it were not skipped
    fake_ping = PingFrame(0, opaque_data=b"12345678").serialize()
    payload = DataFrame(1, data=fake_ping * 100).serialize()
    assert feed(g, PREFACE + payload, step=7) == ""
    assert g.frames(fake_ping, 100.0) == "PING flood"


def test_lifetime_counts_of_resets_and_glitches() -> None:
    g = guard(
        h2_max_rst_stream_abusive_lifetime=2,
        h2_max_rst_stream_emitted_lifetime=2,
        h2_max_glitch_count=2,
    )
    assert g.reset_unanswered() == g.reset_unanswered() == ""
    assert g.reset_unanswered() == "too many streams reset before their answer"
    assert g.reset_sent() == g.reset_sent() == ""
    assert g.reset_sent() == "too many streams reset by the proxy"
    assert g.glitch() == g.glitch() == ""
    assert g.glitch() == "too many faulty streams"


def test_settings_and_ping_frames_of_a_wrong_size_are_frame_size_errors() -> None:
    g = guard()
    assert g.frames(PREFACE + SettingsFrame(0, settings={4: 65535}).serialize(), 1.0) == ""
    assert g.code == ENHANCE_YOUR_CALM
    ack_with_payload = b"\x00\x00\x06\x04\x01\x00\x00\x00\x00" + b"\x00\x04\x00\x00\xff\xff"
    assert g.frames(ack_with_payload, 1.0) == "SETTINGS frame of a wrong size"
    assert g.code == FRAME_SIZE_ERROR
    g = guard()
    short_ping = b"\x00\x00\x04\x06\x00\x00\x00\x00\x00" + b"abcd"
    assert g.frames(PREFACE + short_ping, 1.0) == "PING frame of a wrong size"
    assert g.code == FRAME_SIZE_ERROR


def test_a_settings_frame_of_more_than_64_entries_is_a_frame_size_error() -> None:
    g = guard()
    assert feed(g, PREFACE + SettingsFrame(0, settings={3: 100}).serialize() * 2) == ""
    many = b"\0\x03\0\0\0\x64" * 65
    assert feed(g, len(many).to_bytes(3, "big") + b"\x04\0\0\0\0\0" + many) != ""
    assert g.code == FRAME_SIZE_ERROR


def test_window_updates_on_closed_streams_are_glitches() -> None:
    g = Guard(H2Limits(SimpleNamespace(h2_max_glitch_count=3)), lambda stream_id: stream_id == 1)
    feed(g, PREFACE)
    open_stream = WindowUpdateFrame(3, window_increment=1).serialize()
    assert feed(g, open_stream * 10) == ""  # an open stream: not a fault
    closed = WindowUpdateFrame(1, window_increment=1).serialize()
    assert feed(g, closed * 3) == ""
    assert feed(g, closed) == "too many faulty streams"
    assert g.code == ENHANCE_YOUR_CALM
