"""The HTTP/1.1 protocol `openft serve` runs: uvicorn's httptools protocol plus the limits uvicorn
lacks, enforced where the bytes arrive, before (or while) the app sees a request.

- Request line and headers are bounded in bytes and in number (431); trailers of a chunked body
  count as headers. httptools itself buffers a header of any size.
- A client has `header_timeout` seconds to send its request line and headers, in total, so one
  that trickles them a byte at a time (slowloris) is cut off; a connection that sends nothing is
  closed after the same time.
- While a body is coming, the longest silence is `read_timeout`: idle time between reads, not a
  total, so a large upload over a slow but steady link goes through. The time the server itself
  stops reading (flow control, because the app is busy) doesn't count.

A refused request gets an OpenAI-shaped error body with `connection: close` where a response can
still be sent (nothing of the app's response has gone out); the app, if it was reading the body,
sees `http.disconnect`, so a half-received upload is discarded. The connection then lingers a
little, reading and dropping what the client still sends, so that it reads the answer instead of
a reset.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from openft import ids
from openft.config import Settings
from openft.protocol.common import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0  # after a refusal: how long to drain what the client still sends
LATE_SECONDS = 0.5  # a timer this late means the event loop was blocked: look at the socket first


@dataclass(frozen=True)
class RequestLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout: float
    read_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout=settings.request_header_timeout_seconds,
            read_timeout=settings.request_read_timeout_seconds,
        )


class _Refusal(Exception):
    def __init__(self, status: int, message: str, *, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def limited_protocol(limits: RequestLimits) -> type[HttpToolsProtocol]:
    """The protocol class to hand to `uvicorn.Config(http=...)`."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


def error_bytes(
    status: int, message: str, code: str, default_headers: list[tuple[bytes, bytes]], request_id: str
) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI-style error body, closing the connection."""
    body = ErrorResponse(error=ErrorDetail(message=message, type="invalid_request_error", code=code))
    payload = body.model_dump_json().encode()
    head = [STATUS_LINE[status]]
    for name, value in [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
    ]:
        head += [name, b": ", value, b"\r\n"]
    return b"".join([*head, b"\r\n", payload])


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[RequestLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_body = False  # between the end of the headers and the end of the body
        self._head_started: float | None = None  # when the head being read began; None: between requests
        self._head_bytes = 0  # bytes received while reading the current head
        self._header_count = 0  # headers (and trailers) of the current request
        self._last_read = 0.0
        self._body_arrived = False  # whether the last read carried body bytes
        self._non_body_bytes = 0  # bytes in a row, while reading a body, that carried none (trailers)
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_due = 0.0
        self._lingering = False
        self._upgrade_refused = False

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()  # a connection that sends nothing is closed after header_timeout
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._lingering:  # refused: no response of the app's to wait for
            self.transport.close()
            return
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._upgrade_refused:
            return  # the answer is out, or what follows is another protocol: drop it
        self._unset_keepalive_if_required()
        self._last_read = self.loop.time()
        reading_head = not self._in_body
        if reading_head:
            self._head_bytes += len(data)
        self._body_arrived = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(cause, _Refusal):
                self._refuse(cause)
                return
            if isinstance(error, httptools.HttpParserCallbackError):
                log.warning("a parser callback failed on a request from %s", self._peer(), exc_info=cause)
            self._refuse(_Refusal(400, "Invalid HTTP request received.", code="invalid_http"))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
                return
            # No WebSocket routes (`openft serve` runs with ws="none") nor any other upgrade: the request
            # is answered as plain HTTP, what follows it is dropped, and the connection closes after it.
            self._upgrade_refused = True
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        if self._lingering or self.transport.is_closing():
            return
        if reading_head and not self._in_body and self._head_started is not None:
            if self._head_bytes > self.limits.max_header_bytes:  # headers still incomplete, and too long
                self._refuse(self._headers_too_large())
        elif self._in_body and not reading_head:
            self._non_body_bytes = 0 if self._body_arrived else self._non_body_bytes + len(data)
            if self._non_body_bytes > self.limits.max_header_bytes:  # chunked trailers, with no end
                self._refuse(self._headers_too_large())

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._head_started is None:  # the first byte of a request that follows another
            self._head_started = self.loop.time()
            self._arm(self.limits.header_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise _Refusal(
                431,
                f"The request has more than {self.limits.max_header_count} header fields.",
                code="too_many_headers",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        size = len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            raise self._headers_too_large()
        self._in_body = True
        self._head_started = None
        self._head_bytes = 0
        self._non_body_bytes = 0
        self._last_read = self.loop.time()
        self._arm(self.limits.read_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_arrived = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()  # until the next request's first byte; uvicorn's keep-alive timeout meanwhile
        super().on_message_complete()

    # Timeouts

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._watchdog_due = self.loop.time() + max(delay, 0.0)
        self._watchdog = self.loop.call_at(self._watchdog_due, self._on_watchdog)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self._lingering or self.transport.is_closing():
            return
        now = self.loop.time()
        if now - self._watchdog_due > LATE_SECONDS:
            # The loop was blocked (uvloop runs due timers before it polls): let it read what arrived meanwhile.
            self._arm(0.05)
            return
        if self._in_body:
            if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
                # The server isn't reading (the app is busy), or hasn't asked for the body yet: not the
                # client's silence. Look again soon, so that it gets a whole timeout once reading resumes.
                self._last_read = now
                self._arm(min(1.0, self.limits.read_timeout))
                return
            remaining = self._last_read + self.limits.read_timeout - now
            if remaining > 0:
                self._arm(remaining)
                return
            self._refuse(
                _Refusal(
                    408,
                    f"The request body stalled: nothing arrived for {self.limits.read_timeout:g} seconds.",
                    code="request_timeout",
                )
            )
            return
        if self._head_started is None:
            return
        if self._responding():  # a pipelined request waits for the answer to the one before it
            self._arm(self.limits.header_timeout)
            return
        remaining = self._head_started + self.limits.header_timeout - now
        if remaining > 0:
            self._arm(remaining)
            return
        if self._head_bytes == 0:  # connected and said nothing: nothing to answer
            self.transport.close()
            return
        self._refuse(
            _Refusal(
                408,
                f"The request line and headers did not arrive within {self.limits.header_timeout:g} seconds.",
                code="request_timeout",
            )
        )

    # Refusing

    def _headers_too_large(self) -> _Refusal:
        return _Refusal(
            431,
            f"The request line and headers are larger than {self.limits.max_header_bytes} bytes.",
            code="headers_too_large",
        )

    def _refuse(self, refusal: _Refusal) -> None:
        """Answers `refusal` unless a response has begun, and closes the connection; a request the app
        is reading sees a disconnect."""
        self._disarm()
        # While reading a body, `cycle` is that request's; while reading a head, the one before it,
        # still answering only when the client pipelines.
        cycle = self.cycle if self._in_body or self._responding() else None
        # The app's id for the request it was reading (api/errors.py logs it too), or a new one
        state = cycle.scope.get("state", {}) if cycle is not None and self._in_body else {}
        request_id = str(state.get("request_id") or "req_" + ids.random_token(24))
        log.info(
            "refused a request from %s with %d (request %s): %s",
            self._peer(),
            refusal.status,
            request_id,
            refusal.message,
        )
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            cycle.disconnected = True  # the app's receive() says http.disconnect, its sends go nowhere
            cycle.message_event.set()
        if cycle is not None and (cycle.response_started or not self._in_body):
            self.transport.close()  # a response is on the wire already: nothing more can be said
            return
        self.transport.write(
            error_bytes(refusal.status, refusal.message, refusal.code, self._default_headers(), request_id)
        )
        self._linger()

    def _linger(self) -> None:
        self._lingering = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._watchdog = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.server_state.default_headers)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
