"""The PROXY protocol (--proxy-protocol, --proxy-allow-from) with real v1 and v2
header bytes, as HAProxy and AWS NLB send them, over a socket: on the own path and
on hyper, alone and in front of TLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import time

import pytest

import pki as pki_mod
from conftest import RawConn

APP = "apps.wsgi_rules:application"
PATHS = {"own": (), "hyper": ("--hyper-only",)}
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
GET_ENV = b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n"


def v1(src="203.0.113.7", sport=51234, dst="10.0.0.1", dport=443) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="198.51.100.9", sport=40000, dst="10.0.0.2", dport=80, tlvs=b"", local=False) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if local:
        return V2_SIG + b"\x20\x00" + struct.pack(">H", 0)
    fam = b"\x11" if s.version == 4 else b"\x21"
    body = s.packed + d.packed + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIG + b"\x21" + fam + struct.pack(">H", len(body)) + body


# An AWS NLB v2 header carries a TLV with the VPC endpoint id (type 0xEA).
NLB_TLV = b"\xea" + struct.pack(">H", 23) + b"\x01" + b"vpce-0123456789abcdef0"[:22]


def environ_over(srv, header: bytes, *, split=False) -> dict:
    with RawConn(srv.host, srv.port) as c:
        if split:
            c.send(header[:7])
            time.sleep(0.05)
            c.send(header[7:] + GET_ENV)
        else:
            c.send(header + GET_ENV)
        r = c.read_response()
        assert r.status == 200, r.raw_head
        return r.json()["environ"]


@pytest.mark.parametrize("path", PATHS)
def test_v1_and_v2_set_the_client_address(start_server, path):
    srv = start_server(APP, "--proxy-protocol", "auto", *PATHS[path])
    e = environ_over(srv, v1())
    assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("203.0.113.7", "51234")
    assert (e["PROXY_PROTOCOL"], e["PROXY_ADDR"], e["PROXY_PORT"]) == ("TCP4", "10.0.0.1", "443")
    e = environ_over(srv, v2(tlvs=NLB_TLV), split=True)
    assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("198.51.100.9", "40000")
    e = environ_over(srv, v1(src="2001:db8::7", dst="2001:db8::1"))
    assert e["REMOTE_ADDR"] == "2001:db8::7" and e["PROXY_PROTOCOL"] == "TCP6"
    e = environ_over(srv, v2(src="2001:db8::9", dst="2001:db8::2"))
    assert e["REMOTE_ADDR"] == "2001:db8::9"
    # The proxy's own connection (a health check): the peer is the client.
    e = environ_over(srv, b"PROXY UNKNOWN\r\n")
    assert e["REMOTE_ADDR"] == "127.0.0.1" and e["PROXY_PROTOCOL"] == "UNKNOWN"
    e = environ_over(srv, v2(local=True))
    assert e["REMOTE_ADDR"] == "127.0.0.1" and e["PROXY_PROTOCOL"] == "LOCAL"


@pytest.mark.parametrize("path", PATHS)
def test_the_header_holds_for_every_request_of_the_connection(start_server, path):
    srv = start_server(APP, "--proxy-protocol", "v1", *PATHS[path])
    with RawConn(srv.host, srv.port) as c:
        c.send(v1() + GET_ENV + GET_ENV)
        for _ in range(2):
            assert c.read_response().json()["environ"]["REMOTE_ADDR"] == "203.0.113.7"
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert c.read_response().body == b"hello"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad", ["missing", "malformed_v1", "malformed_v2", "wrong_version"])
def test_an_allowed_peer_without_a_valid_header_is_closed_with_a_log_line(start_server, path, bad):
    srv = start_server(APP, "--proxy-protocol", "v2" if bad == "wrong_version" else "auto",
                       *PATHS[path])
    data = {
        "missing": GET_ENV,
        "malformed_v1": b"PROXY TCP4 203.0.113 10.0.0.1 1 2\r\n" + GET_ENV,
        "malformed_v2": V2_SIG + b"\x21\x11\x00\x04abcd" + GET_ENV,
        "wrong_version": v1() + GET_ENV,
    }[bad]
    with RawConn(srv.host, srv.port) as c:
        c.send(data)
        assert c.is_closed(timeout=5)
    srv.wait_for_log("PROXY protocol: connection closed")
    # The worker still serves good connections.
    assert environ_over(srv, v2() if bad == "wrong_version" else v1())["REMOTE_ADDR"] != "127.0.0.1"


@pytest.mark.parametrize("path", PATHS)
def test_a_peer_not_allowed_cannot_send_a_header(start_server, path):
    srv = start_server(APP, "--proxy-protocol", "--proxy-allow-from", "10.9.8.7", *PATHS[path])
    with RawConn(srv.host, srv.port) as c:
        c.send(v1() + GET_ENV)
        r = c.read_response()
        assert r.status == 400
    with RawConn(srv.host, srv.port) as c:
        c.send(v2() + GET_ENV)
        assert c.read_response().status == 400
    # Its plain requests are served as its own.
    with RawConn(srv.host, srv.port) as c:
        c.send(GET_ENV)
        e = c.read_response().json()["environ"]
        assert e["REMOTE_ADDR"] == "127.0.0.1" and "PROXY_PROTOCOL" not in e


def test_the_proxy_is_who_is_trusted_for_queue_stamps(start_server):
    # The announced client (203.0.113.7) is not a trusted peer; the proxy (127.0.0.1)
    # is, and the stamp and X-Forwarded-* are its headers.
    srv = start_server(APP, "--proxy-protocol", "--queue-header", "X-Request-Start")
    stamp = f"t={int(time.time() * 1e6)}"
    with RawConn(srv.host, srv.port) as c:
        c.send(v1() + f"GET /environ HTTP/1.1\r\nHost: x\r\nX-Request-Start: {stamp}\r\n"
                      "X-Forwarded-Proto: https\r\n\r\n".encode())
        e = c.read_response().json()["environ"]
    assert e["REMOTE_ADDR"] == "203.0.113.7"
    assert e["rwsgi.queue_time"] is not None
    assert e["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("path", PATHS)
def test_proxy_header_then_tls(start_server, tmp_path, path, monkeypatch):
    p = pki_mod.make(tmp_path / "pki")
    srv = start_server(APP, "--proxy-protocol", "auto", "--certfile", str(p.cert),
                       "--keyfile", str(p.key), *PATHS[path])
    ctx = ssl.create_default_context(cafile=str(p.ca))
    for header, client in ((v2(tlvs=NLB_TLV), "198.51.100.9"), (v1(), "203.0.113.7")):
        c = RawConn(srv.host, srv.port)
        c.send(header)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        with c:
            c.send(GET_ENV + GET_ENV)
            for _ in range(2):
                e = c.read_response().json()["environ"]
                assert e["REMOTE_ADDR"] == client
                assert e["wsgi.url_scheme"] == "https"


def test_the_access_log_shows_the_announced_client(start_server):
    srv = start_server(APP, "--proxy-protocol", "--access-log", "-")
    environ_over(srv, v1(src="192.0.2.44"))
    srv.wait_for_log("192.0.2.44", timeout=10)
