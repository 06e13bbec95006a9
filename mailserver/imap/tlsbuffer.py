"""The TLS read buffer of an IMAP connection, shared by the connections of an event loop (issue 10).

Invariants:
- asyncio's TLS protocol (``asyncio.sslproto.SSLProtocol``) gives each connection a read buffer of
  ``max_size`` octets (``service.TLS_READ_BUFFER``): 32 KiB of resident memory per idle connection, half
  of what an idle authenticated IMAPS connection cost.
- Under a selector event loop that buffer only lives within one synchronous call: the transport
  ``recv_into``s it and hands it to ``buffer_updated``, which copies it into the connection's incoming
  BIO before returning. So once its handshake is done, a connection may read through one buffer per loop.
- Anything else (a proactor loop, which reads into the buffer asynchronously; another TLS protocol, e.g.
  uvloop's) keeps its own buffer: ``share_tls_read_buffer`` then does nothing and says so.
"""

from __future__ import annotations

import asyncio
import weakref
from asyncio import selector_events, sslproto
from typing import Any

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[bytearray, memoryview]] = (
    weakref.WeakKeyDictionary()
)


def share_tls_read_buffer(writer: asyncio.StreamWriter) -> bool:
    """After the handshake: the connection reads through its loop's shared buffer. Returns whether it does."""
    loop = asyncio.get_running_loop()
    proto = getattr(writer.transport, "_ssl_protocol", None)
    if not isinstance(loop, selector_events.BaseSelectorEventLoop) or type(proto) is not sslproto.SSLProtocol:
        return False
    tls: Any = proto  # its buffer is not in the stubs
    size = len(tls._ssl_buffer)
    shared = _SHARED.get(loop)
    if shared is None or len(shared[0]) < size:
        buffer = bytearray(size)
        shared = _SHARED[loop] = (buffer, memoryview(buffer))
    tls._ssl_buffer, tls._ssl_buffer_view = shared
    return True
