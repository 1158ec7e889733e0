"""The parts of a RegisterOutputs stream, as the transport hands them to
OutputService: an item to register, a chunk of one of its asset files, the commit;
for an analytics job, its result and its files (artifacts) instead of items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geopera_kernel.server.domain.artifacts import ArtifactFile


@dataclass(frozen=True)
class OutputAssetSpec:
    key: str
    roles: list[str]
    title: str
    size_bytes: int
    sha256: str
    # Where the worker uploaded the bytes (SignOutputUploads); "" when chunks carry them.
    href: str = ""


@dataclass(frozen=True)
class OutputItemPart:
    output_key: str
    name: str
    geometry: dict[str, Any]
    datetime: datetime | None
    properties: dict[str, Any]
    source_item_ids: list[str]
    assets: list[OutputAssetSpec]


@dataclass(frozen=True)
class OutputChunkPart:
    output_key: str
    asset_key: str
    write_offset: int
    data: bytes
    finish_write: bool


@dataclass(frozen=True)
class OutputArtifactPart(ArtifactFile):
    """An analytics job's file; its chunks name it with output_key "" (ARTIFACT_OUTPUT_KEY)."""


@dataclass(frozen=True)
class AnalyticsResultPart:
    operation: str
    result: dict[str, Any]


@dataclass(frozen=True)
class CommitPart:
    pass


# An item's output_key is never empty, so artifacts' chunks use it.
ARTIFACT_OUTPUT_KEY = ""

OutputPart = OutputItemPart | OutputChunkPart | OutputArtifactPart | AnalyticsResultPart | CommitPart
