"""Outputs uploaded straight to object storage (SignOutputUploads, `OutputAsset.href`).

A worker asks for one presigned PUT URL per output file; each writes one object under
its attempt's own prefix (`projects/<project>/uploads/<job>/<attempt>/...`) and expires.
RegisterOutputs then names the object instead of streaming its bytes; the server accepts
exactly the href it would have signed for that job, attempt, output and asset, reads the
object once (its size and SHA-256 checked against the declaration, a local copy for the
raster checks), and copies it inside the store to the asset's key. Staged objects are
removed after the commit; those a crash leaves are unreferenced keys under `projects/`,
which the storage sweep removes after its grace.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from geopera_kernel.server.domain.jobs import JobRecord
from geopera_kernel.server.domain.names import UPLOAD_NAME
from geopera_kernel.server.domain.output_parts import OutputAssetSpec
from geopera_kernel.server.errors import DomainError, failed_precondition, invalid_argument
from geopera_kernel.server.storage import ObjectStorage

MAX_UPLOADS_PER_CALL = 100


@dataclass(frozen=True)
class SignedUpload:
    output_key: str
    asset_key: str
    href: str
    url: str
    expire_time: datetime


def upload_key(job: JobRecord, output_key: str, asset_key: str) -> str:
    """The one object key an upload of this job attempt's output file may have."""
    return f"projects/{job.project_id}/uploads/{job.id}/{job.attempt}/{output_key}/{asset_key}.tif"


def sign_uploads(storage: ObjectStorage | None, job: JobRecord, targets: list[tuple[str, str]]) -> list[SignedUpload]:
    if storage is None:
        raise failed_precondition(
            "PRESIGNED_UPLOADS_UNAVAILABLE", "storage is a local directory: send the bytes in RegisterOutputs"
        )
    if len(targets) > MAX_UPLOADS_PER_CALL:
        raise invalid_argument("TOO_MANY_UPLOADS", f"at most {MAX_UPLOADS_PER_CALL} files per call", field="files")
    expire = datetime.now(UTC) + timedelta(seconds=storage.presign_ttl_seconds)
    signed = []
    for index, (output_key, asset_key) in enumerate(targets):
        for name, value in (("output_key", output_key), ("asset_key", asset_key)):
            UPLOAD_NAME.require(value, what=name, reason="INVALID_OUTPUT", field=f"files[{index}].{name}")
        key = upload_key(job, output_key, asset_key)
        signed.append(SignedUpload(output_key, asset_key, key, storage.presign_put(key), expire))
    return signed


def require_own_href(storage: ObjectStorage | None, job: JobRecord, output_key: str, spec: OutputAssetSpec,
                     where: str) -> None:  # fmt: skip
    """Refuses an href other than the one signed for this attempt's output file."""
    if storage is None or spec.href != upload_key(job, output_key, spec.key):
        raise invalid_argument(
            "INVALID_OUTPUT_HREF", "href is not this attempt's upload of this output asset", field=f"{where}.href"
        )
    if spec.size_bytes <= 0 or len(spec.sha256) != 64:
        raise invalid_argument(
            "INVALID_OUTPUT", "an uploaded asset must declare size_bytes and sha256", field=f"{where}.sha256"
        )


def _incomplete(message: str, where: str) -> DomainError:
    return invalid_argument("INCOMPLETE_UPLOAD", message, field=where)


def fetch_uploaded(storage: ObjectStorage, spec: OutputAssetSpec, target: Path, max_bytes: int, where: str) -> None:
    """Reads the uploaded object into `target` (for the raster checks), checking its size
    and SHA-256 against the declaration; INCOMPLETE_UPLOAD when missing or different."""
    try:
        size = storage.size(spec.href)
    except FileNotFoundError:
        raise _incomplete("nothing was uploaded to href", where) from None
    if size != spec.size_bytes:
        raise _incomplete(f"the uploaded object has {size} bytes, declared {spec.size_bytes}", where)
    if size > max_bytes:
        raise invalid_argument("UPLOAD_TOO_LARGE", "output asset exceeds the upload limit", field=where)
    digest = hashlib.sha256()
    with storage.open_read(spec.href) as source, target.open("wb") as out:
        while data := source.read(1 << 20):
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != spec.sha256.lower():
        raise _incomplete("the uploaded object does not match the declared sha256", where)


async def fetch_all(
    storage: ObjectStorage | None, uploaded: dict[tuple[str, str], OutputAssetSpec], scratch: Path, max_bytes: int
) -> dict[tuple[str, str], Path]:
    """`fetch_uploaded` for each uploaded asset, keyed like RegisterOutputs' received files."""
    assert storage is not None  # require_own_href accepted no href without it
    files = {}
    for (output_key, asset_key), spec in uploaded.items():
        path = scratch / f"up-{output_key}-{asset_key}.tif"
        where = f"items[{output_key}].assets[{asset_key}]"
        await asyncio.to_thread(fetch_uploaded, storage, spec, path, max_bytes, where)
        files[(output_key, asset_key)] = path
    return files


def discard_uploads(storage: ObjectStorage, hrefs: list[str]) -> None:
    """Best effort: what is left is swept later."""
    for href in hrefs:
        try:
            storage.delete(href)
        except Exception:  # the sweep removes it
            pass
