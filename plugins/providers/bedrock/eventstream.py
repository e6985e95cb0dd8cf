"""A decoder for AWS's binary event-stream framing (``application/vnd.amazon.eventstream``), which Bedrock's
ConverseStream answers in. Small enough to own rather than pull in botocore for it.

A message is: total length (4 bytes, big-endian), headers length (4), CRC32 of those 8 bytes (4), the headers,
the payload, and a CRC32 of everything before it (4). A header is a 1-byte name length, the name, a 1-byte
value type and the value (type 7, a string, has a 2-byte length). Both checksums are verified: a corrupt or
truncated stream is an error, never a silently wrong answer.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

PRELUDE = 12  # total length, headers length, prelude CRC
MAX_MESSAGE = 16 * 1024 * 1024  # AWS caps messages far below this; a bigger length means a broken stream

#: Fixed-size header value types: type byte → size in bytes (0/1 are booleans without a value).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    """The bytes are not a well-formed event stream (bad checksum, impossible length, truncated)."""


@dataclass
class Message:
    headers: dict[str, object]
    payload: bytes


def _headers(raw: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    i = 0
    try:
        while i < len(raw):
            size = raw[i]
            name = raw[i + 1:i + 1 + size].decode("utf-8")
            i += 1 + size
            kind = raw[i]
            i += 1
            value: object
            if kind in (6, 7):  # bytes, string: 2-byte length then the value
                (length,) = struct.unpack_from(">H", raw, i)
                data = raw[i + 2:i + 2 + length]
                if len(data) != length:
                    raise EventStreamError("truncated header value")
                value = data.decode("utf-8") if kind == 7 else data
                i += 2 + length
            elif kind in _FIXED:
                width = _FIXED[kind]
                data = raw[i:i + width]
                if len(data) != width:
                    raise EventStreamError("truncated header value")
                if kind in (0, 1):
                    value = kind == 0
                elif kind == 9:  # uuid
                    value = data
                else:  # byte, short, int, long, timestamp (ms)
                    value = int.from_bytes(data, "big", signed=True)
                i += width
            else:
                raise EventStreamError(f"unknown header value type {kind}")
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    return out


class Decoder:
    """Feed it bytes as they arrive; ``ready()`` hands back each whole message once its last byte is in (the
    messages before a damaged one first, then the error)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def ready(self) -> Iterator[Message]:
        while len(self._buf) >= PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buf, 0)
            if zlib.crc32(bytes(self._buf[:8])) != prelude_crc:
                raise EventStreamError("prelude checksum mismatch")
            if total < PRELUDE + 4 + headers_len or total > MAX_MESSAGE:
                raise EventStreamError(f"impossible message length {total}")
            if len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise EventStreamError("message checksum mismatch")
            yield Message(_headers(frame[PRELUDE:PRELUDE + headers_len]), frame[PRELUDE + headers_len:-4])

    def close(self) -> None:
        """At the end of the stream: leftover bytes mean it was cut off mid-message."""
        if self._buf:
            raise EventStreamError(f"stream ended inside a message ({len(self._buf)} bytes left)")


async def messages(chunks: AsyncIterator[bytes]) -> AsyncIterator[Message]:
    """The messages of a byte stream, each as soon as it is complete."""
    decoder = Decoder()
    async for chunk in chunks:
        decoder.feed(chunk)
        for message in decoder.ready():
            yield message
    decoder.close()
