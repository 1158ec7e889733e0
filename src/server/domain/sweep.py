"""The storage sweep: reconciles what storage holds with what the database names.

Bytes are written before the transaction that references them commits, and
kept when that commit's outcome is unknown (see `pending_objects`); a crash can
also leave scratch files behind. The sweep, run by every server at start and
then periodically (and by `geopera admin storage sweep`), removes:

- analytics artifacts older than their retention: rows first, then bytes;
- stored objects no asset or artifact names, once older than the grace period
  (younger ones may belong to a commit in progress);
- scratch entries (temporary files, staged uploads without an upload row)
  untouched for longer than the grace period.

Everything is decided by age and by the database, so any number of replicas
sharing one storage may sweep at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopera_kernel.server.storage import BlobStorage
from geopera_kernel.server.store import Database, Q

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 3600.0
DEFAULT_ARTIFACT_RETENTION_SECONDS = 7 * 24 * 3600.0
OBJECT_PREFIX = "projects/"
UPLOAD_STAGING = "uploads"
_BATCH = 1000


@dataclass
class SweepReport:
    """What one sweep removed: artifact ids, storage keys, scratch entry names."""

    expired_artifacts: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    stale_scratch: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.expired_artifacts or self.orphan_objects or self.stale_scratch)

    def to_json(self) -> dict[str, Any]:
        return {
            "expired_artifacts": self.expired_artifacts,
            "orphan_objects": self.orphan_objects,
            "stale_scratch": self.stale_scratch,
        }

    def __str__(self) -> str:
        return (
            f"removed {len(self.expired_artifacts)} expired artifact(s), {len(self.orphan_objects)} orphan "
            f"object(s), {len(self.stale_scratch)} stale scratch entr(y/ies)"
        )


def _newest_mtime(path: Path) -> float:
    """The latest modification under `path` (a file or a directory tree)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return time.time()
    if path.is_dir() and not path.is_symlink():
        for directory, _dirs, files in os.walk(path):
            for name in (*files, *_dirs):
                try:
                    newest = max(newest, Path(directory, name).lstat().st_mtime)
                except FileNotFoundError:
                    continue
    return newest


class StorageSweeper:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        artifact_retention_seconds: float = DEFAULT_ARTIFACT_RETENTION_SECONDS,
    ) -> None:
        self._db = db
        self._storage = storage
        self.grace_seconds = grace_seconds
        self.artifact_retention_seconds = artifact_retention_seconds

    async def sweep(self, grace_seconds: float | None = None) -> SweepReport:
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        report = SweepReport()
        await self._expire_artifacts(report)
        cutoff = time.time() - grace
        await self._remove_orphans(cutoff, report)
        await self._remove_stale_scratch(cutoff, report)
        return report

    async def _expire_artifacts(self, report: SweepReport) -> None:
        # The rows go first (their downloads end with NOT_FOUND); bytes whose
        # removal a crash interrupts are orphans for the next sweep.
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(Q.expire_artifacts, {"retention_seconds": self.artifact_retention_seconds})
            ).fetchall()
        for row in rows:
            await asyncio.to_thread(self._storage.delete, row["storage_key"])
            report.expired_artifacts.append(row["id"])

    async def _remove_orphans(self, cutoff: float, report: SweepReport) -> None:
        def old_keys() -> list[str]:
            return [o.key for o in self._storage.list_objects(OBJECT_PREFIX) if o.stored_time < cutoff]

        candidates = await asyncio.to_thread(old_keys)
        for start in range(0, len(candidates), _BATCH):
            batch = candidates[start : start + _BATCH]
            async with self._db.connection() as conn:
                rows = await (await conn.execute(Q.referenced_storage_keys, {"keys": batch})).fetchall()
            referenced = {row["storage_key"] for row in rows}
            for key in batch:
                if key not in referenced:
                    await asyncio.to_thread(self._storage.delete, key)
                    report.orphan_objects.append(key)

    async def _remove_stale_scratch(self, cutoff: float, report: SweepReport) -> None:
        scratch = self._storage.scratch_dir()

        def stale_entries() -> tuple[list[Path], list[Path]]:
            entries, staged = [], []
            for entry in scratch.iterdir():
                if entry.name == UPLOAD_STAGING and entry.is_dir():
                    staged = [f for f in entry.iterdir() if _newest_mtime(f) < cutoff]
                elif _newest_mtime(entry) < cutoff:
                    entries.append(entry)
            return entries, staged

        entries, staged = await asyncio.to_thread(stale_entries)
        if staged:
            # A staged upload lives as long as its row (see expire_uploads).
            async with self._db.connection() as conn:
                rows = await (await conn.execute(Q.live_upload_ids, {"ids": [f.name for f in staged]})).fetchall()
            live = {row["id"] for row in rows}
            entries += [f for f in staged if f.name not in live]

        def remove(paths: list[Path]) -> None:
            for path in paths:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(remove, entries)
        report.stale_scratch += [path.relative_to(scratch).as_posix() for path in entries]
