"""An analytics call's file as the server knows it: the file (what a worker declares
of it, what is stored of it), and the id it has once stored."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArtifactFile:
    key: str
    media_type: str
    title: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class StoredArtifact(ArtifactFile):
    id: str
