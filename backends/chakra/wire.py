"""The protobuf wire format, for the few Chakra messages the writer emits.

Encoding by hand lets the writer encode each role's nodes once and splice in the per-rank fields
with byte concatenation; the generated module (third_party/chakra/et_def_pb2.py) checks the result.
"""

from __future__ import annotations

import struct

VARINT, FIXED64, LEN = 0, 1, 2


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 negatives take ten bytes, two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def f_varint(field: int, n: int) -> bytes:
    return key(field, VARINT) + varint(n)


def f_bytes(field: int, data: bytes) -> bytes:
    return key(field, LEN) + varint(len(data)) + data


def f_string(field: int, text: str) -> bytes:
    return f_bytes(field, text.encode())


def f_double(field: int, x: float) -> bytes:
    return key(field, FIXED64) + struct.pack("<d", x)


def f_packed_varints(field: int, values) -> bytes:
    if not values:
        return b""
    return f_bytes(field, b"".join(varint(v) for v in values))


def delimited(message: bytes) -> bytes:
    """Length-delimited record, as ASTRA-sim's feeder reads them (varint32 size, then bytes)."""
    return varint(len(message)) + message


# AttributeProto (field numbers of et_def.proto): name 1, int64_val 9, uint64_val 13, bool_val 27,
# string_val 29, bool_list 28 (a BoolList message: repeated bool values = 1).
def attr_int64(name: str, v: int) -> bytes:
    return f_string(1, name) + f_varint(9, int(v))


def attr_uint64(name: str, v: int) -> bytes:
    return f_string(1, name) + f_varint(13, int(v))


def attr_bool(name: str, v: bool) -> bytes:
    return f_string(1, name) + f_varint(27, 1 if v else 0)


def attr_string(name: str, v: str) -> bytes:
    return f_string(1, name) + f_string(29, v)


def attr_bool_list(name: str, values: list[bool]) -> bytes:
    return f_string(1, name) + f_bytes(28, f_packed_varints(1, [1 if b else 0 for b in values]))


def node_attr(attr: bytes) -> bytes:
    """An AttributeProto as Node field 10 (repeated, so pieces may be appended in any order)."""
    return f_bytes(10, attr)
