"""Where asset and artifact bytes live, behind one small interface.

`LocalStorage` keeps files in a directory (by default `$GEOPERA_HOME/storage`).
The S3-compatible backend (storage_s3.S3Storage) implements the same methods;
`local_path` is how rasterio reads a stored object (a real path here, a
`/vsis3/` path there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredObject:
    key: str
    # When the object was stored (seconds since the epoch).
    stored_time: float


class BlobStorage(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Store a copy of `source` under `key`, atomically (readers never see a
        partial object)."""

    def move_file(self, key: str, source: Path) -> None:
        """Store `source` under `key`, consuming it (a rename when both are on one file
        system, as files under `scratch_dir()` are); atomic like `put_file`."""

    def open_read(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove `key`; no error when it does not exist."""

    def local_path(self, key: str) -> str:
        """A path GDAL can open for `key`."""

    def scratch_dir(self) -> Path:
        """A directory on the same file system for temporary files."""

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every stored object whose key starts with `prefix` (scratch excluded)."""


class ObjectStorage(BlobStorage, Protocol):
    """Storage other hosts reach on their own (an S3 bucket): workers get presigned
    URLs for one object each instead of streaming bytes through the server."""

    def presign_get(self, key: str) -> str: ...

    def presign_put(self, key: str) -> str: ...

    @property
    def presign_ttl_seconds(self) -> float: ...

    def copy(self, source_key: str, key: str) -> None:
        """Store a copy of the object `source_key` under `key`, inside the store."""


def object_storage(storage: BlobStorage) -> ObjectStorage | None:
    """`storage` when other hosts can reach it by presigned URLs, else None."""
    return storage if hasattr(storage, "presign_put") else None  # type: ignore[return-value]


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._scratch = self.root / ".scratch"
        self._scratch.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._scratch, prefix="put-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def move_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except OSError:  # another file system: copy, then drop the source
            self.put_file(key, source)
            source.unlink(missing_ok=True)
            return
        # A rename keeps the source's time; the sweep's grace counts from storing.
        now = time.time()
        os.utime(target, (now, now))

    def open_read(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> str:
        return str(self._path(key))

    def scratch_dir(self) -> Path:
        return self._scratch

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        base = self._path(prefix) if prefix else self.root
        for directory, subdirs, files in os.walk(base):
            if Path(directory) == self.root:
                subdirs[:] = [d for d in subdirs if Path(directory, d) != self._scratch]
            for name in files:
                path = Path(directory, name)
                try:
                    stored = path.stat().st_mtime
                except FileNotFoundError:  # removed meanwhile
                    continue
                yield StoredObject(path.relative_to(self.root).as_posix(), stored)


def iter_chunks(stream: BinaryIO, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
    """Yield `limit` bytes (0 = to the end) from `offset` in `chunk_size` pieces."""
    stream.seek(offset)
    remaining = limit if limit > 0 else None
    while remaining is None or remaining > 0:
        want = chunk_size if remaining is None else min(chunk_size, remaining)
        data = stream.read(want)
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data
