"""The child's end of the channel to the host: frame format, size limits and exit codes.

A frame is a 4-byte big-endian length followed by UTF-8 JSON. The host side (``gofannon.sandbox``) imports
the constants from here, so both ends agree by construction. Standard library only.
"""

import builtins
import json
import os
import struct
import threading

HEADER = struct.Struct(">I")
#: trace events of one run, and the length of one event's message (the host enforces both as well)
MAX_EVENTS = 2000
MAX_MESSAGE = 4096
#: printed bytes after which the run is stopped (the trace keeps only the first MAX_EVENTS lines anyway)
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
MAX_RESULT_BYTES = 32 * 1024 * 1024

#: exit statuses that tell the host why a child ended when no ``done`` frame could say it
EXIT_OUTPUT, EXIT_HOST_GONE, EXIT_CPU = 3, 4, 5
#: ``__module__`` of the classes agent code meets (in tracebacks and reprs): the child used to be one script,
#: and agents keep seeing the bare names they saw then (``HTTPException: 402: ...``)
AGENT_MODULE = "__main__"


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("host closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> dict:
    (size,) = HEADER.unpack(_read_exact(fd, 4))
    return json.loads(_read_exact(fd, size))


class Writer:
    """Thread-safe blocking frame writer (agent code may print from threads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj: dict) -> None:
        self.send_encoded(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())

    def send_encoded(self, payload: bytes) -> None:
        """Send JSON the caller already encoded (the final frame is encoded first to check its size)."""
        view = memoryview(HEADER.pack(len(payload)) + payload)
        with self.lock:
            while view:
                view = view[os.write(self.fd, view):]


class HTTPException(Exception):
    """How a platform error (``GofannonError`` on the host) reaches agent code: str is ``"<status>: <detail>"``."""

    __module__ = AGENT_MODULE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        head, _, detail = message.partition(": ")
        self.status_code = int(head) if head.isdigit() else 500
        self.detail = detail if head.isdigit() else message


def remote_exception(etype: str, message: str) -> BaseException:
    """The exception an error reply stands for: a builtin of that name, ``HTTPException``, or a same-named
    class made up on the spot."""
    if etype == "HTTPException":
        return HTTPException(message)
    cls = getattr(builtins, etype, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return type(etype, (Exception,), {"__module__": "gofannon"})(message)
