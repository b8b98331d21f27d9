"""A streaming `multipart/form-data` reader: file parts go straight into blob writers as they
arrive, so an upload never sits in memory and an oversized one is refused mid-stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from openft.errors import InvalidRequest, PayloadTooLarge
from openft.protocol.files import MAX_FILENAME_CHARS

# Bounds of the form itself, not tunables: OpenAI's forms have a few short fields (`purpose`,
# `expires_after[...]`) besides the file, whose size is a setting.
MAX_FIELD_BYTES = 64 * 1024  # a field's value; over it: 400 naming the field
MAX_FIELDS = 100
MAX_PART_HEADER_BYTES = 16 * 1024  # the headers of one part (Content-Disposition with its filename, ...)


def form_description(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its multipart form by hand (streamed into the blob
    store), which FastAPI can't see: the form as the OpenAPI document should describe it."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class FileSink(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...
    def discard(self) -> None: ...


@dataclass
class ReceivedFile:
    field_name: str
    filename: str
    sink: FileSink


@dataclass
class MultipartForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)

    def discard_files(self) -> None:
        for received in self.files.values():
            received.sink.discard()


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    header_bytes: int = 0
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    sink: FileSink | None = None


async def read_multipart(
    request: Request,
    open_sink: Callable[[str, str], FileSink],
    *,
    max_file_bytes: int,
    file_fields: tuple[str, ...],
) -> MultipartForm:
    """Reads the whole form; `open_sink(field, filename)` receives each part named in `file_fields`."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type.lower() != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "This endpoint expects a multipart/form-data body with a boundary.", code="invalid_multipart"
        )
    declared_length = request.headers.get("content-length")
    if declared_length and declared_length.isdigit() and int(declared_length) > max_file_bytes + 1024 * 1024:
        raise _too_large(max_file_bytes)
    reader = _FormReader(open_sink, max_file_bytes, file_fields)
    parser = MultipartParser(boundary, cast("MultipartCallbacks", reader.callbacks()))
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            reader.raise_pending()
        parser.finalize()
        reader.raise_pending()
        if not reader.finished:
            raise InvalidRequest("The multipart body ended before its closing boundary.", code="invalid_multipart")
    except MultipartParseError as error:
        reader.form.discard_files()
        reader.discard_current()
        raise InvalidRequest(f"Malformed multipart body: {error}", code="invalid_multipart") from error
    except BaseException:
        reader.form.discard_files()
        reader.discard_current()
        raise
    return reader.form


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"File exceeds the maximum upload size of {limit} bytes.", param="file", code="file_too_large"
    )


class _FormReader:
    """python-multipart callbacks that can't raise through the parser; errors wait in `pending`."""

    def __init__(
        self, open_sink: Callable[[str, str], FileSink], max_file_bytes: int, file_fields: tuple[str, ...]
    ) -> None:
        self.open_sink = open_sink
        self.max_file_bytes = max_file_bytes
        self.file_fields = file_fields
        self.form = MultipartForm()
        self.part = _Part()
        self.pending: Exception | None = None
        self.finished = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def raise_pending(self) -> None:
        if self.pending is not None:
            raise self.pending

    def discard_current(self) -> None:
        if self.part.sink is not None:
            self.part.sink.discard()

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        if self._part_header_fits(end - start):
            self.part.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        if self._part_header_fits(end - start):
            self.part.header_value += data[start:end]

    def _part_header_fits(self, size: int) -> bool:
        if self.pending:
            return False
        self.part.header_bytes += size
        if self.part.header_bytes > MAX_PART_HEADER_BYTES:
            self.pending = InvalidRequest(
                f"The headers of a multipart part are larger than {MAX_PART_HEADER_BYTES} bytes.",
                code="invalid_multipart",
            )
            return False
        return True

    def on_header_end(self) -> None:
        self.part.headers[self.part.header_field.lower()] = self.part.header_value
        self.part.header_field = b""
        self.part.header_value = b""

    def on_headers_finished(self) -> None:
        if self.pending:
            return
        _, options = parse_options_header(self.part.headers.get(b"content-disposition"))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if not self.part.name:
            self.pending = InvalidRequest("A multipart part has no field name.", code="invalid_multipart")
            return
        if b"filename" in options and self.part.name in self.file_fields:
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
            if len(self.part.filename) > MAX_FILENAME_CHARS:
                self.pending = InvalidRequest(
                    f"The filename of '{self.part.name}' is longer than {MAX_FILENAME_CHARS} characters.",
                    param=self.part.name,
                    code="invalid_value",
                )
                return
            self.part.sink = self.open_sink(self.part.name, self.part.filename)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.pending:
            return
        chunk = data[start:end]
        if self.part.sink is not None:
            if self.part.sink.size + len(chunk) > self.max_file_bytes:
                self.pending = _too_large(self.max_file_bytes)
                return
            self.part.sink.write(chunk)
        elif len(self.part.value) + len(chunk) > MAX_FIELD_BYTES:
            self.pending = InvalidRequest(
                f"Form field '{self.part.name}' is too long.", param=self.part.name, code="invalid_value"
            )
        else:
            self.part.value += chunk

    def on_part_end(self) -> None:
        if self.pending:
            return
        name = self.part.name
        if name in self.form.files or name in self.form.fields:
            self.pending = InvalidRequest(f"Form field '{name}' was sent twice.", param=name, code="invalid_value")
            self.discard_current()
        elif self.part.sink is not None and self.part.filename is not None:
            self.form.files[name] = ReceivedFile(name, self.part.filename, self.part.sink)
        elif len(self.form.fields) >= MAX_FIELDS:
            self.pending = InvalidRequest("Too many form fields.", code="invalid_multipart")
        else:
            self.form.fields[name] = self.part.value.decode("utf-8", "replace")
        self.part.sink = None

    def on_end(self) -> None:
        self.finished = True
