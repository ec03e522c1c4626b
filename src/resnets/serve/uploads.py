"""A multipart/form-data body read into memory with a size cap, never onto disk.

Starlette spools uploads over 1 MB to a temporary file; a server that promises to write
nothing to disk reads the body itself, stops at the limit (413), and parses it in memory
with ``python-multipart``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .images import ImageRejected

FORM_OVERHEAD = 64 * 1024  # bytes of multipart headers and small fields allowed on top


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def name(self) -> str | None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        return name.decode("utf-8", "replace") if name is not None else None


@dataclass
class Upload:
    """The ``file`` field's bytes and the other (text) fields."""

    file: bytes
    fields: dict[str, str]


def _too_large(limit: int) -> ImageRejected:
    return ImageRejected(413, f"the upload is larger than this server's limit of "
                              f"{limit / 2**20:g} MB")


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """The multipart body of ``request``, with its ``file`` field at most ``max_bytes``."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ImageRejected(415, "expected a multipart/form-data upload with the image in a "
                                 "field named 'file'")
    cap = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(max_bytes)
    parts: list[_Part] = []
    header: list[bytes] = [b"", b""]
    ended = [False]  # the closing boundary was read: the body is whole

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_end() -> None:
        ended[0] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1].headers[header[0].lower()] = header[1]
        header[0], header[1] = b"", b""

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin,
                                        "on_part_data": on_part_data,
                                        "on_header_field": on_header_field,
                                        "on_header_value": on_header_value,
                                        "on_header_end": on_header_end,
                                        "on_end": on_end})
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > cap:
                raise _too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise ImageRejected(422, f"malformed multipart body: {e}") from None
    if not ended[0]:  # a cut-off body parses as far as it goes: its last part is partial
        raise ImageRejected(422, "the multipart body ends before its closing boundary "
                                 "(the upload was cut off)")
    fields: dict[str, str] = {}
    file: bytes | None = None
    for part in parts:
        if part.name == "file" and file is None:
            file = bytes(part.data)
        elif part.name and len(part.data) <= 1024:
            fields[part.name] = part.data.decode("utf-8", "replace")
    if file is None:
        raise ImageRejected(422, "no field named 'file' in the upload")
    if len(file) > max_bytes:
        raise _too_large(max_bytes)
    return Upload(file, fields)
