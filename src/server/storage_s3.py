"""The S3-compatible backend of `BlobStorage` (`GEOPERA_STORAGE_URL=s3://bucket/prefix`).

Endpoint, region and credentials come from the standard `AWS_*` variables (boto3 reads
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...). GDAL reads objects in place with `/vsis3/`
range requests: the same variables, plus the endpoint spelled GDAL's way, which this module
sets for the process from AWS_ENDPOINT_URL when one is given. Objects are written whole (an S3 PUT, or a
multipart upload completed at once), so readers never see a partial object. Workers on
other hosts get presigned URLs (`presign_get`, `presign_put`) scoped to one key, expiring.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from geopera_kernel.raster.s3_endpoint import use_endpoint
from geopera_kernel.server.storage import StoredObject

_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, "prefix/") (prefix "" when absent)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"GEOPERA_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _missing(err: ClientError) -> bool:
    return str(err.response.get("Error", {}).get("Code", "")) in _MISSING


class S3Reader(io.RawIOBase):
    """A seekable read-only view of one object: each read continues one streaming GET
    from the current offset; a seek elsewhere starts a new ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._pos = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = max(0, base + offset)
        if target != self._pos:
            self._drop()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size or len(buffer) == 0:
            return 0
        if self._body is None:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-")
            self._body = answer["Body"]
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class S3Storage:
    def __init__(self, url: str, scratch: Path, presign_ttl_seconds: float = 3600.0) -> None:
        self.presign_ttl_seconds = presign_ttl_seconds
        self.bucket, self.prefix = parse_s3_url(url)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        # S3-compatible servers (MinIO, moto, Ceph) usually want path-style addressing.
        style = "path" if endpoint else "auto"
        self.client = boto3.client(
            "s3", config=Config(signature_version="s3v4", s3={"addressing_style": style}, retries={"mode": "standard"})
        )
        if endpoint:
            use_endpoint(endpoint)
        self._scratch = scratch.resolve()
        self._scratch.mkdir(parents=True, exist_ok=True)

    def object_key(self, key: str) -> str:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"invalid storage key: {key!r}")
        return self.prefix + key

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self.object_key(key))

    def move_file(self, key: str, source: Path) -> None:
        self.put_file(key, source)
        source.unlink(missing_ok=True)

    def copy(self, source_key: str, key: str) -> None:
        """A server-side copy (no byte through this process)."""
        self.client.copy({"Bucket": self.bucket, "Key": self.object_key(source_key)}, self.bucket, self.object_key(key))

    def _head(self, key: str) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as err:
            if _missing(err):
                raise FileNotFoundError(key) from None
            raise
        return answer

    def open_read(self, key: str) -> BinaryIO:
        size = int(self._head(key)["ContentLength"])
        return io.BufferedReader(S3Reader(self.client, self.bucket, self.object_key(key), size), 1 << 20)

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def local_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self.object_key(key)}"

    def scratch_dir(self) -> Path:
        return self._scratch

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for entry in page.get("Contents", ()):
                yield StoredObject(entry["Key"][len(self.prefix) :], entry["LastModified"].timestamp())

    def presign_get(self, key: str) -> str:
        return self._presign("get_object", key)

    def presign_put(self, key: str) -> str:
        return self._presign("put_object", key)

    def _presign(self, method: str, key: str) -> str:
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        url: str = self.client.generate_presigned_url(method, Params=params, ExpiresIn=int(self.presign_ttl_seconds))
        return url
