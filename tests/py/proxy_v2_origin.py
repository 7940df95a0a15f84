#!/usr/bin/env python3
"""A TCP origin that expects a PROXY protocol v2 header before the payload.

Usage: proxy_v2_origin.py IP PORT

The parser is written from the specification (haproxy's proxy-protocol.txt,
section 2.2), independently of the connector's encoder, so the test checks
the header against the spec rather than against itself. Per connection it
reads the header, then the payload to EOF (the client half-closes), prints
one JSON line and answers `ok <payload length>` before closing:

  {"event": "connection", "src": "IP:PORT", "dst": "IP:PORT",
   "command": "PROXY", "family": "inet", "tlvs": [[type, len], ...],
   "payload": "<payload as text>"}

A header that breaks the spec prints {"event": "error", "error": "..."} and
the connection is closed without an answer.
"""

import ipaddress
import json
import socket
import struct
import sys
import threading

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
# Address family (high nibble) -> (name, length of the address block).
FAMILIES = {0x0: ("unspec", 0), 0x1: ("inet", 12), 0x2: ("inet6", 36), 0x3: ("unix", 216)}
PROTOCOLS = {0x0: "unspec", 0x1: "stream", 0x2: "dgram"}

print_lock = threading.Lock()


def report(obj):
    with print_lock:
        print(json.dumps(obj), flush=True)


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ValueError(f"connection ended after {len(buf)} of {n} header bytes")
        buf += chunk
    return buf


def parse_header(conn):
    fixed = read_exact(conn, 16)
    if fixed[:12] != SIGNATURE:
        raise ValueError(f"no v2 signature: {fixed[:12]!r}")
    version, command = fixed[12] >> 4, fixed[12] & 0x0F
    if version != 2:
        raise ValueError(f"version {version}, want 2")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command}")
    family, protocol = fixed[13] >> 4, fixed[13] & 0x0F
    if family not in FAMILIES or protocol not in PROTOCOLS:
        raise ValueError(f"unknown family/protocol byte {fixed[13]:#04x}")
    (length,) = struct.unpack("!H", fixed[14:16])
    body = read_exact(conn, length)
    name, addr_len = FAMILIES[family]
    if length < addr_len:
        raise ValueError(f"length {length} is shorter than the {name} address block ({addr_len})")
    out = {"command": COMMANDS[command], "family": name, "protocol": PROTOCOLS[protocol]}
    if name == "inet":
        src = ipaddress.IPv4Address(body[0:4])
        dst = ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        out["src"], out["dst"] = f"{src}:{sport}", f"{dst}:{dport}"
    elif name == "inet6":
        src = ipaddress.IPv6Address(body[0:16])
        dst = ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
        out["src"], out["dst"] = f"[{src}]:{sport}", f"[{dst}]:{dport}"
    tlvs, rest = [], body[addr_len:]
    while rest:
        if len(rest) < 3:
            raise ValueError(f"{len(rest)} trailing bytes cannot hold a TLV")
        kind, tlv_len = rest[0], struct.unpack("!H", rest[1:3])[0]
        if len(rest) < 3 + tlv_len:
            raise ValueError(f"TLV {kind:#04x} of {tlv_len} bytes overruns the header")
        tlvs.append([kind, tlv_len])
        rest = rest[3 + tlv_len:]
    out["tlvs"] = tlvs
    return out


def serve(conn):
    with conn:
        try:
            header = parse_header(conn)
        except (ValueError, OSError) as e:
            report({"event": "error", "error": str(e)})
            return
        payload = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            payload += chunk
        report({"event": "connection", **header, "payload": payload.decode("utf-8", "replace")})
        conn.sendall(f"ok {len(payload)}\n".encode())


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, port))
    srv.listen(64)
    report({"event": "listening", "address": f"{ip}:{port}"})
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
