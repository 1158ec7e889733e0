"""`geopera download`: an item asset (`items/{item_id}/assets/{asset_key}`) or an
analytics artifact (`artifacts/{artifact_id}`) to a file or stdout, through
`KernelService/DownloadAsset` with the caller's token.

The bytes are checked against the size and SHA-256 the server announces (and
`--sha256` when given). A file is written as `<output>.part` and renamed only
once complete and verified, so a failed download leaves no file behind; to
stdout (`-o -`) the bytes already written stay and the exit status says it
failed. A stream dropped with UNAVAILABLE resumes at the bytes received.
`--signed-url` prints a signed HTTP URL of the resource instead (`assets.sign`):
for curl, a browser, QGIS or GDAL (`rio info /vsicurl/$(geopera download
--signed-url ...)`), no token needed until it expires.

Exit status: 0 done; 1 the kernel refused, could not be reached, or the bytes
did not verify; 2 a bad command line or an output that cannot be written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from geopera_kernel.server.remote import KernelRefused, add_connection_arguments, open_channel, token_of

if TYPE_CHECKING:
    from geopera.v1 import kernel_pb2, kernel_pb2_grpc

# Waits before resuming a stream that failed UNAVAILABLE (one resume per entry).
RESUME_DELAYS = (0.2, 0.5, 1.0, 2.0)
# Extensions for the default file name where `mimetypes` has none or an odd one.
_EXTENSIONS = {"image/tiff": ".tif", "image/png": ".png", "image/jpeg": ".jpg", "application/json": ".json"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "resource",
        help="items/{item_id}/assets/{asset_key} or artifacts/{artifact_id} (an asset's href); "
        "an HTTP download URL (.../v1/items/...) names the same resource",
    )
    parser.add_argument(
        "-o", "--output",
        help="file to write, or - for stdout; default: <item_id>_<asset_key> or <artifact_id> in the current "
        "folder, with the extension of the media type",
    )  # fmt: skip
    parser.add_argument("--sha256", help="expected hex SHA-256 (e.g. the asset's); a file with another is refused")
    parser.add_argument(
        "--signed-url", action="store_true",
        help="print a signed HTTP URL of the resource (assets.sign) instead of downloading it: it opens with no "
        "token (curl, a browser, QGIS, GDAL /vsicurl/) until it expires",
    )  # fmt: skip
    parser.add_argument(
        "--ttl", type=int, default=0,
        help="with --signed-url: seconds the URL works, 1..604800 (default: the server's, 1 hour)",
    )  # fmt: skip
    add_connection_arguments(parser)


def resource_name_of(text: str) -> str:
    """The `DownloadAsset` resource name: as given, or the path after `/v1/`
    of an HTTP download URL (its query, such as a signature, dropped)."""
    if "/v1/" in text:
        text = text.split("/v1/", 1)[1].split("?", 1)[0].split("#", 1)[0]
    return text.strip("/")


def default_file_name(resource_name: str, media_type: str) -> str:
    """`<item_id>_<asset_key><ext>` or `<artifact_id><ext>`, safe as one file name."""
    parts = resource_name.split("/")
    if len(parts) == 4 and parts[0] == "items" and parts[2] == "assets":
        stem = f"{parts[1]}_{parts[3]}"
    else:
        stem = parts[-1]
    stem = _UNSAFE.sub("_", stem).lstrip(".") or "download"
    base = media_type.split(";", 1)[0].strip().lower()
    extension = _EXTENSIONS.get(base) or mimetypes.guess_extension(base) or ""
    return stem if stem.endswith(extension) else stem + extension


class Output:
    """Where the bytes go: stdout, or `<path>.part`, renamed when verified.
    Opened at the first message, which tells the media type (for the default name)."""

    def __init__(self, target: str | None, resource_name: str) -> None:
        self.target = target
        self.resource_name = resource_name
        self.path: Path | None = None
        self._part: Path | None = None
        self._handle: IO[bytes] | None = None

    @property
    def to_stdout(self) -> bool:
        return self.target == "-"

    def open(self, media_type: str) -> None:
        if self.to_stdout:
            self._handle = sys.stdout.buffer
            return
        self.path = Path(self.target or default_file_name(self.resource_name, media_type))
        if self.path.is_dir():
            self.path = self.path / default_file_name(self.resource_name, media_type)
        self._part = self.path.with_name(self.path.name + ".part")
        self._handle = self._part.open("wb")

    def write(self, data: bytes) -> None:
        assert self._handle is not None
        self._handle.write(data)

    def commit(self) -> None:
        assert self._handle is not None
        if self.to_stdout:
            self._handle.flush()
            return
        self._handle.close()
        assert self._part is not None and self.path is not None
        os.replace(self._part, self.path)

    def discard(self) -> None:
        if self._handle is not None and not self.to_stdout:
            self._handle.close()
        if self._part is not None:
            self._part.unlink(missing_ok=True)


class Received:
    """The bytes so far, checked message by message and in full at the end."""

    def __init__(self, name: str, expected_sha256: str) -> None:
        self.name = name
        self.expected_sha256 = expected_sha256.lower()
        self.total: int | None = None
        self.sha256 = ""
        self.media_type = ""
        self.offset = 0
        self._digest = hashlib.sha256()

    def accept(self, message: kernel_pb2.DownloadAssetResponse, first: bool, output: Output) -> None:
        if first and self.total is None:
            self.total, self.sha256, self.media_type = message.total_size, message.sha256, message.media_type
            expected, announced = self.expected_sha256, self.sha256
            if expected and announced and announced != expected:
                raise KernelRefused("DATA_LOSS", "CHECKSUM_MISMATCH",
                                     f"{self.name} has sha256 {announced}, expected {expected}")  # fmt: skip
            output.open(self.media_type)
        elif first and (message.total_size, message.sha256) != (self.total, self.sha256):
            raise KernelRefused("ABORTED", "CONTENT_CHANGED", f"{self.name} changed while it was downloaded")
        if message.offset != self.offset:
            raise KernelRefused("INTERNAL", "UNEXPECTED_OFFSET", f"chunk at {message.offset}, expected {self.offset}")
        if message.data:
            output.write(message.data)
            self._digest.update(message.data)
            self.offset += len(message.data)

    @property
    def complete(self) -> bool:
        return self.total is not None and self.offset >= self.total

    def verify(self) -> str:
        digest = self._digest.hexdigest()
        if self.offset != self.total:
            raise KernelRefused("DATA_LOSS", "INCOMPLETE", f"{self.name}: got {self.offset} of {self.total} bytes")
        for expected in (self.sha256, self.expected_sha256):
            if expected and digest != expected:
                raise KernelRefused("DATA_LOSS", "CHECKSUM_MISMATCH",
                                     f"{self.name}: received sha256 {digest}, expected {expected}")  # fmt: skip
        return digest


def fetch(
    stub: kernel_pb2_grpc.KernelServiceStub,
    received: Received,
    output: Output,
    metadata: Iterable[tuple[str, str]],
    delays: tuple[float, ...] = RESUME_DELAYS,
) -> str:
    """Streams the resource into `output`, resuming after UNAVAILABLE; returns the verified sha256."""
    import grpc

    from geopera.v1 import kernel_pb2

    for attempt in range(len(delays) + 1):
        request = kernel_pb2.DownloadAssetRequest(resource_name=received.name, read_offset=received.offset)
        call = stub.DownloadAsset(request, metadata=tuple(metadata))
        try:
            first = True
            for message in call:
                received.accept(message, first, output)
                first = False
            if received.complete:
                return received.verify()
            failure = KernelRefused("UNAVAILABLE", "STREAM_ENDED", "the download ended early")
        except grpc.RpcError as err:
            failure = KernelRefused.from_rpc(err)
        finally:
            call.cancel()
        if failure.code != "UNAVAILABLE" or attempt == len(delays):
            raise failure
        time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def report(failure: KernelRefused, server: str) -> int:
    hint = f" (is a kernel serving {server}?)" if failure.reason == "UNAVAILABLE" else ""
    print(f"error: {failure}{hint}", file=sys.stderr)
    return 1


def print_signed_url(
    stub: kernel_pb2_grpc.KernelServiceStub, name: str, ttl_seconds: int, metadata: Iterable[tuple[str, str]]
) -> None:
    """`assets.sign`, its URL on stdout (alone, for `$(...)`) and its expiry on stderr."""
    import grpc

    from geopera.v1 import catalog_pb2, kernel_pb2

    request = kernel_pb2.ExecuteRequest(operation="assets.sign")
    request.params.Pack(catalog_pb2.AssetsSignParams(resource_name=name, ttl_seconds=ttl_seconds))
    try:
        response = stub.Execute(request, metadata=tuple(metadata), timeout=30)
    except grpc.RpcError as err:
        raise KernelRefused.from_rpc(err) from None
    result = catalog_pb2.AssetsSignResult()
    response.result.Unpack(result)
    print(result.url)
    print(f"expires {result.expire_time.ToJsonString()}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:

    from geopera.v1 import kernel_pb2_grpc

    name = resource_name_of(args.resource)
    token = token_of(args)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if args.signed_url and (args.output or args.sha256):
        print("error: --signed-url downloads nothing: it takes neither -o nor --sha256", file=sys.stderr)
        return 2
    if args.ttl and not args.signed_url:
        print("error: --ttl is the lifetime of a --signed-url", file=sys.stderr)
        return 2
    if args.sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        print("error: --sha256 takes 64 hex digits", file=sys.stderr)
        return 2
    try:
        channel = open_channel(args)
    except OSError as err:
        print(f"error: --ca-file: {err}", file=sys.stderr)
        return 2
    if args.signed_url:
        try:
            with channel:
                print_signed_url(kernel_pb2_grpc.KernelServiceStub(channel), name, args.ttl, metadata)
        except KernelRefused as err:
            return report(err, args.server)
        return 0
    output = Output(args.output, name)
    received = Received(name, args.sha256 or "")
    try:
        with channel:
            sha256 = fetch(kernel_pb2_grpc.KernelServiceStub(channel), received, output, metadata)
        output.commit()
    except KernelRefused as err:
        output.discard()
        return report(err, args.server)
    except BrokenPipeError:
        output.discard()
        # The reader of stdout went away (`| head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        output.discard()
        print(f"error: cannot write the output: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        output.discard()
        return 130
    if not output.to_stdout:
        summary = {"resource_name": name, "path": str(output.path), "size_bytes": received.offset,
                   "sha256": sha256, "media_type": received.media_type}  # fmt: skip
        print(json.dumps(summary, indent=2))
    return 0
