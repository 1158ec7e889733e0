"""Upload sources and download sinks, shared by the sync and asyncio clients."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from geopera.v1 import catalog_pb2, kernel_pb2, resources_pb2
from geopera_sdk._errors import ChecksumMismatch, GeoperaError

MiB = 1 << 20
MAX_CHUNK = 4 * MiB  # the server's per-message limit for upload chunks

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
Target = str | resources_pb2.Asset | resources_pb2.Artifact


class UploadSource:
    """Bytes to upload: a path, a bytes-like object, or a seekable binary file.
    Read once to hash, then once per attempt to send."""

    def __init__(self, source: Source, file_name: str | None, chunk_size: int) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK} bytes")
        self.chunk_size = chunk_size
        self._data: bytes | None = None
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        if isinstance(source, bytes | bytearray | memoryview):
            self._data = bytes(source)
            self.file_name = file_name or "upload.bin"
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
            self.file_name = file_name or self._path.name
        elif hasattr(source, "read") and hasattr(source, "seek"):
            self._file = source
            self._start = source.tell()
            self.file_name = file_name or Path(str(getattr(source, "name", "upload.bin"))).name
        else:
            raise TypeError("upload source must be a path, bytes, or a seekable binary file")
        digest = hashlib.sha256()
        size = 0
        for chunk in self.chunks():
            digest.update(chunk)
            size += len(chunk)
        self.sha256 = digest.hexdigest()
        self.size = size

    def chunks(self) -> Iterator[bytes]:
        if self._data is not None:
            for start in range(0, len(self._data), self.chunk_size):
                yield self._data[start : start + self.chunk_size]
            return
        if self._path is not None:
            with self._path.open("rb") as handle:
                while chunk := handle.read(self.chunk_size):
                    yield chunk
            return
        assert self._file is not None
        self._file.seek(self._start)
        while chunk := self._file.read(self.chunk_size):
            yield chunk

    def requests(self, project_id: str, on_sent: Any = None) -> Iterator[kernel_pb2.UploadAssetRequest]:
        """The UploadAsset stream: metadata in the first message, `finish_write` on the last."""
        offset = 0
        pending: bytes | None = None
        first = True
        for chunk in self.chunks():
            if pending is not None:
                yield self._message(project_id, pending, offset, first, last=False)
                first = False
                offset += len(pending)
                if on_sent is not None:
                    on_sent(offset)
            pending = chunk
        yield self._message(project_id, pending or b"", offset, first, last=True)
        if on_sent is not None:
            on_sent(offset + len(pending or b""))

    def _message(self, project_id: str, data: bytes, offset: int, first: bool, last: bool) -> Any:
        message = kernel_pb2.UploadAssetRequest(write_offset=offset, data=data, finish_write=last)
        if first:
            message.project_id = project_id
            message.file_name = self.file_name
            message.total_size = self.size
            message.sha256 = self.sha256
        return message

    def check(self, response: kernel_pb2.UploadAssetResponse) -> str:
        if response.sha256 and response.sha256 != self.sha256:
            raise ChecksumMismatch(
                f"the server received sha256 {response.sha256}, sent {self.sha256}", reason="UPLOAD_CHECKSUM_MISMATCH"
            )
        return response.upload_id


def resource_name(target: Target) -> tuple[str, str]:
    """(resource name, expected sha256 or "") of a download target."""
    if isinstance(target, resources_pb2.Asset | resources_pb2.Artifact):
        if not target.href:
            raise ValueError("the asset has no href")
        return target.href, target.sha256
    if isinstance(target, str):
        return target, ""
    raise TypeError("download target must be an href string, an Asset or an Artifact")


@dataclass(frozen=True)
class SignedUrl:
    """What `sign` returns: a URL that downloads the resource over HTTP with no
    header (curl, a browser, GDAL `/vsicurl/`, QGIS) until `expire_time` (UTC)."""

    url: str
    expire_time: dt.datetime

    @classmethod
    def from_result(cls, result: catalog_pb2.AssetsSignResult) -> SignedUrl:
        return cls(result.url, result.expire_time.ToDatetime(tzinfo=dt.UTC))

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class DownloadResult:
    """What `download` wrote."""

    resource_name: str
    path: Path | None
    size_bytes: int
    sha256: str
    media_type: str
    resumes: int


class DownloadSink:
    """Writes chunks in order, hashing as it goes; a resumed stream continues
    at `offset`. Verifies size and SHA-256 at the end."""

    def __init__(self, name: str, dest: str | os.PathLike[str] | IO[bytes], expected_sha256: str) -> None:
        self.name = name
        self.expected_sha256 = expected_sha256
        self.offset = 0
        self.total: int | None = None
        self.sha256 = ""
        self.media_type = ""
        self.resumes = 0
        self._digest = hashlib.sha256()
        self.path: Path | None = None
        self._part: Path | None = None
        if isinstance(dest, str | os.PathLike):
            self.path = Path(dest)
            self._part = self.path.with_name(self.path.name + ".part")
            self._handle: IO[bytes] = self._part.open("wb")
            self._owned = True
        else:
            self._handle = dest
            self._owned = False

    def request(self) -> kernel_pb2.DownloadAssetRequest:
        return kernel_pb2.DownloadAssetRequest(resource_name=self.name, read_offset=self.offset)

    def accept(self, message: kernel_pb2.DownloadAssetResponse, first: bool) -> None:
        if first:
            self._check_header(message)
        if message.offset != self.offset:
            raise GeoperaError(f"chunk at offset {message.offset}, expected {self.offset}", reason="UNEXPECTED_OFFSET")
        if message.data:
            self._handle.write(message.data)
            self._digest.update(message.data)
            self.offset += len(message.data)

    def _check_header(self, message: kernel_pb2.DownloadAssetResponse) -> None:
        if self.total is None:
            self.total = message.total_size
            self.sha256 = message.sha256
            self.media_type = message.media_type
            if self.expected_sha256 and self.sha256 and self.sha256 != self.expected_sha256:
                raise ChecksumMismatch(
                    f"{self.name}: the server announces sha256 {self.sha256}, expected {self.expected_sha256}",
                    reason="CHECKSUM_MISMATCH",
                )
        elif (message.total_size, message.sha256) != (self.total, self.sha256):
            raise ChecksumMismatch(f"{self.name} changed while it was downloaded", reason="CONTENT_CHANGED")

    @property
    def complete(self) -> bool:
        return self.total is not None and self.offset >= self.total

    def finish(self) -> DownloadResult:
        digest = self._digest.hexdigest()
        expected = self.sha256 or self.expected_sha256
        if self.total is not None and self.offset != self.total:
            self.abort()
            raise ChecksumMismatch(f"{self.name}: got {self.offset} of {self.total} bytes", reason="INCOMPLETE")
        if expected and digest != expected:
            self.abort()
            raise ChecksumMismatch(f"{self.name}: sha256 {digest}, expected {expected}", reason="CHECKSUM_MISMATCH")
        if self._owned:
            self._handle.close()
            assert self._part is not None and self.path is not None
            os.replace(self._part, self.path)
        else:
            self._handle.flush()
        return DownloadResult(self.name, self.path, self.offset, digest, self.media_type, self.resumes)

    def abort(self) -> None:
        if self._owned:
            self._handle.close()
            if self._part is not None:
                self._part.unlink(missing_ok=True)
