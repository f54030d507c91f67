"""Several requests (or answers) in one body: how the front hands a batch to a model-server worker.

multi-model-server 1.1.11 can batch by itself, but its Java frontend misreads a worker's multi-answer message
whenever a socket read ends inside an answer's header map or status (`CorruptedFrameException: Invalid
message size: -3`, and the worker is restarted): measured within seconds of load at batch 8. A one-answer
message has those fields at its start, so the front batches and MMS carries one message per batch.

Layout: a 4-byte big-endian length, that many bytes of a JSON list with one `[meta..., length]` entry per
part, then the parts' bytes one after another.
"""

from __future__ import annotations

import json
import struct

CONTENT_TYPE = "application/x-imgclf-batch"
_LENGTH = struct.Struct("!I")


def pack(parts: list[tuple[list, bytes]]) -> bytes:
    """`(meta, body)` pairs (meta: a JSON-able list) into one body."""
    index = json.dumps([[*meta, len(body)] for meta, body in parts]).encode()
    return b"".join([_LENGTH.pack(len(index)), index, *(body for _, body in parts)])


def unpack(data: bytes | bytearray) -> list[tuple[list, bytes]]:
    """The inverse of `pack`; ValueError where `data` is not such a body."""
    data = memoryview(data)
    if len(data) < _LENGTH.size:
        raise ValueError("a batch body too short for its index")
    (size,) = _LENGTH.unpack_from(data)
    offset = _LENGTH.size + size
    parts = []
    for *meta, length in json.loads(bytes(data[_LENGTH.size : offset])):
        parts.append((meta, bytes(data[offset : offset + length])))
        offset += length
    if offset != len(data):
        raise ValueError("a batch body whose parts do not add up to its length")
    return parts
