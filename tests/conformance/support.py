"""Helpers shared by the conformance tests: a hand-rolled protobuf wire writer (golden bytes
come from the encoding spec, not from the library under test) and PD's source revisions cited.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from pydantic import SecretStr
from writer_support import WriterNode, nodes

from rmwatch.http.writer_app import PREFIX, create_writer_app

PD_HEAD = "a186e0c"
"""The tikv/pd commit the ``# PD:`` citations in this suite were read at."""
KVPROTO_HEAD = "b6cdca1"
"""The pingcap/kvproto commit the ``# kvproto:`` citations were read at."""


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as 64-bit two's complement, as int64 fields carry them."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f_varint(field: int, n: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(field << 3) + varint(n)


def f_len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, sub-messages."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def f_str(field: int, text: str) -> bytes:
    """A string field."""
    return f_len(field, text.encode())


def f_double(field: int, x: float) -> bytes:
    """A double field (wire type 1, little-endian)."""
    return varint(field << 3 | 1) + struct.pack("<d", x)


def ru_settings(fill_rate: int, burst_limit: int, tokens: float = 0.0) -> bytes:
    """Field 3 ``r_u_settings`` {1 ``r_u`` TokenBucket{1 settings{1 fill, 2 burst}, 2 tokens}}."""
    limits = (f_varint(1, fill_rate) if fill_rate else b"") + (
        f_varint(2, burst_limit) if burst_limit else b""
    )
    bucket = f_len(1, limits) + (f_double(2, tokens) if tokens else b"")
    return f_len(3, f_len(1, bucket))


TOKEN = "conformance-token"


def go_indent(compact: bytes, indent: bytes = b"    ") -> bytes:
    """Go's ``json.Indent(dst, src, "", indent)`` (encoding/json/indent.go): a newline and
    the depth's indent after ``{``/``[`` (unless the value is empty) and after ``,``; ``": "``
    after a key; the closing bracket on its own line; strings copied as they are."""
    out = bytearray()
    depth = 0
    in_string = escaped = False
    need_indent = False
    for byte in compact:
        char = bytes([byte])
        if in_string:
            out += char
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
            continue
        if need_indent and char not in b"]}":
            need_indent = False
            depth += 1
            out += b"\n" + indent * depth
        if char == b'"':
            in_string = True
            out += char
        elif char in b"{[":
            need_indent = True  # the newline is deferred: "{}" and "[]" stay empty
            out += char
        elif char == b",":
            out += b",\n" + indent * depth
        elif char == b":":
            out += b": "
        elif char in b"]}":
            if need_indent:
                need_indent = False  # an empty value: "{}", "[]"
            else:
                depth -= 1
                out += b"\n" + indent * depth
            out += char
        else:
            out += char
    return bytes(out)


@contextmanager
def writer_http(
    endpoints: list[str], root_prefix: str
) -> Iterator[tuple[WriterNode, httpx.Client]]:
    """A leading LegacyAll writer served over HTTP, and a client on its API prefix that sends
    the bearer token."""
    node = WriterNode(endpoints, root_prefix, name="conformance").start()
    with nodes(node):
        node.serve(create_writer_app(node.writer, token=SecretStr(TOKEN)))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=node.address + PREFIX, headers=headers, timeout=10) as http:
            yield node, http


__all__ = [
    "KVPROTO_HEAD",
    "PD_HEAD",
    "TOKEN",
    "f_double",
    "f_len",
    "f_str",
    "f_varint",
    "ru_settings",
    "varint",
    "writer_http",
]
