"""The size and SHA-256 of a stored file: what assets and artifacts are recorded with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def size_and_sha256(path: Path) -> tuple[int, str]:
    """Bytes and hex SHA-256 of the file at ``path``. Raises OSError."""
    with Path(path).open("rb") as file:
        digest = hashlib.file_digest(file, "sha256")
        return os.fstat(file.fileno()).st_size, digest.hexdigest()
