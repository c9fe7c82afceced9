"""The request parser of dockvol's HTTP server (src/dockvol/_transport/http1.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockvol._transport.http1 import HTTPError, Parser, Request

ENGINE_20 = b'POST /VolumeDriver.Get HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 14\r\nAccept-Encoding: gzip\r\n\r\n{"Name":"v1"}\n'
ENGINE_26 = ENGINE_20.replace(b"Host: ", b"Host: plugin.moby.localhost")


def parse_all(data: bytes, max_head: int = 65536, max_body: int = 1 << 20) -> list[Request]:
    p = Parser(max_head, max_body)
    p.feed(data)
    out = []
    while (r := p.next()) is not None:
        out.append(r)
    return out


def refusal(data: bytes, **limits: int) -> int:
    with pytest.raises(HTTPError) as info:
        parse_all(data, **limits)
    assert info.value.message
    return info.value.status


@pytest.mark.parametrize("raw", [ENGINE_20, ENGINE_26])
def test_the_engines_requests_parse(raw: bytes) -> None:
    (r,) = parse_all(raw)
    assert (r.method, r.target, r.version, r.keep_alive) == (
        "POST",
        b"/VolumeDriver.Get",
        "1.1",
        True,
    )
    assert r.body == b'{"Name":"v1"}\n'
    host = raw.split(b"Host: ")[1].split(b"\r\n")[0]
    assert r.headers[0] == (b"host", host) and (b"content-length", b"14") in r.headers
    assert all(name == name.lower() for name, _ in r.headers)


def test_pipelined_requests_come_out_in_order() -> None:
    reqs = parse_all(ENGINE_20.replace(b"/VolumeDriver.Get", b"/a") + ENGINE_26 + ENGINE_20)
    assert [r.target for r in reqs] == [b"/a", b"/VolumeDriver.Get", b"/VolumeDriver.Get"]


def test_a_request_split_anywhere_is_the_same_request() -> None:
    for cut in range(1, len(ENGINE_20)):
        p = Parser(65536, 1 << 20)
        p.feed(ENGINE_20[:cut])
        assert p.next() is None
        p.feed(ENGINE_20[cut:])
        r = p.next()
        assert r is not None and r.body == b'{"Name":"v1"}\n'
        assert p.next() is None and p.buffered == 0


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = (
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n" + ENGINE_20
    )
    first, second = parse_all(raw)
    assert first.body == b"hello, world!!!"
    assert second.body == b'{"Name":"v1"}\n'


def test_no_body_and_http_1_0() -> None:
    (r,) = parse_all(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert (r.version, r.keep_alive, r.body) == ("1.0", False, b"")
    (r,) = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert r.keep_alive
    (r,) = parse_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert not r.keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST  /x HTTP/1.1\r\n\r\n", 400),
        (b"POST /x HTTP/2.0\r\n\r\n", 505),
        (b"POST /x HTTP/1.1x\r\n\r\n", 400),
        (b"P(ST /x HTTP/1.1\r\n\r\n", 400),
        (b"POST /x\x7f HTTP/1.1\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nA: b\nB: c\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nExpect: magic\r\n\r\n", 417),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
    ],
)
def test_malformed_requests_are_refused_with_a_status(raw: bytes, status: int) -> None:
    assert refusal(raw) == status


def test_limits() -> None:
    assert refusal(b"POST /x HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n\r\n", max_head=100) == 431
    # A head that never ends is refused as soon as it is over the limit, not at its end.
    assert refusal(b"POST /x HTTP/1.1\r\nX: " + b"a" * 200, max_head=100) == 431
    many = b"".join(b"X%d: y\r\n" % i for i in range(101))
    assert refusal(b"POST /x HTTP/1.1\r\n" + many + b"\r\n") == 431
    assert refusal(b"POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n", max_body=10) == 413
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert refusal(head + b"6\r\nabcdef\r\n" * 2, max_body=10) == 413
    trailers = b"".join(b"T%d: %s\r\n" % (i, b"v" * 50) for i in range(5))
    assert refusal(head + b"0\r\n" + trailers, max_head=100) == 431


def test_expect_continue_is_wanted_until_the_body_begins() -> None:
    p = Parser(65536, 1 << 20)
    p.feed(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert p.next() is None and p.wants_continue
    p.continue_sent()
    assert not p.wants_continue
    p.feed(b"ok")
    r = p.next()
    assert r is not None and r.body == b"ok"


# -- properties -------------------------------------------------------------------------------
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=20)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str, bytes, list[tuple[bytes, bytes]], bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD"]))
    target = "/" + draw(st.text(alphabet="abcXYZ./_-%0123456789", max_size=30))
    headers = [
        (n.encode(), v.encode())
        for n, v in draw(st.lists(st.tuples(_token, _value), max_size=8))
        if n.lower() not in ("content-length", "transfer-encoding", "expect", "connection")
    ]
    body = draw(st.binary(max_size=300))
    chunked = draw(st.booleans())
    head = f"{method} {target} HTTP/1.1\r\n".encode()
    head += b"".join(b"%s: %s\r\n" % h for h in headers)
    if chunked:
        sizes = draw(st.lists(st.integers(1, 50), max_size=10))
        parts, rest = [], body
        for n in sizes:
            if rest:
                parts.append(rest[:n])
                rest = rest[n:]
        if rest:
            parts.append(rest)
        data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts) + b"0\r\n\r\n"
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + data
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return raw, method, target.encode(), headers, body


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_any_valid_stream_parses_back_whatever_the_cuts(
    reqs: list[tuple[bytes, str, bytes, list[tuple[bytes, bytes]], bytes]], data: st.DataObject
) -> None:
    stream = b"".join(r[0] for r in reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    p = Parser(65536, 1 << 20)
    got: list[Request] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        p.feed(stream[last:cut])
        last = cut
        while (r := p.next()) is not None:
            got.append(r)
    assert len(got) == len(reqs)
    for r, (_, method, target, headers, body) in zip(got, reqs, strict=True):
        assert (r.method, r.target, r.body) == (method, target, body)
        assert [
            h for h in r.headers if h[0] != b"transfer-encoding" and h[0] != b"content-length"
        ] == [(n.lower(), v) for n, v in headers]
    assert p.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_requests_or_a_refusal_never_a_crash(data: bytes) -> None:
    p = Parser(256, 256)
    p.feed(data)
    try:
        for _ in range(len(data) + 1):
            if p.next() is None:
                break
    except HTTPError as exc:
        assert 400 <= exc.status < 600 and exc.message
