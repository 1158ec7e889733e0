"""The job plugin interface: one class per job type.

A plugin declares its `job_type_id`, a pydantic `input_model` (its JSON Schema
becomes the type's input schema on the server), a `cost_model` (`geopera_kernel.raster.cost.CostModel`,
the one the server prices by), which of its input fields name source items, and a
synchronous `run()` that reads the sources and writes output files. The runtime
(geopera_kernel.worker.runtime) does the rest: fetching sources, progress, cancellation, and
RegisterOutputs.

Plugins never import grpc or generated code.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from geopera_kernel.raster.cost import CostModel
from geopera_kernel.raster.job_types import JobTypeDefinition


@dataclass(frozen=True)
class SourceAsset:
    key: str
    # A path GDAL can open (shared storage, or a file the runtime downloaded).
    path: str
    media_type: str
    roles: list[str]
    # Band metadata as JSON shaped like geopera.v1.Band (name, common_name,
    # nodata, scale, offset, statistics, ...).
    bands: list[dict[str, Any]]


@dataclass(frozen=True)
class SourceItem:
    id: str
    name: str
    collection_id: str
    datetime: datetime
    geometry: dict[str, Any]  # GeoJSON footprint, lon/lat
    properties: dict[str, Any]
    assets: dict[str, SourceAsset]


@dataclass
class OutputFile:
    key: str
    path: Path
    roles: list[str] = field(default_factory=lambda: ["data"])
    title: str = ""


@dataclass
class JobOutput:
    """One item the job produced."""

    name: str
    geometry: dict[str, Any]  # GeoJSON footprint, lon/lat
    datetime: datetime
    files: list[OutputFile]
    properties: dict[str, Any] = field(default_factory=dict)
    # Source items this output derives from; empty = every source of the job.
    source_item_ids: list[str] = field(default_factory=list)


@dataclass
class ArtifactFile:
    """A file an analytics method wrote: the server stores it as an artifact of the job."""

    key: str
    path: Path
    media_type: str
    title: str = ""


@dataclass
class AnalyticsAnswer:
    """What an analytics job returns instead of items: the method's result (JSON-ready, as
    the synchronous call's) and its files. The server renders from them the answer
    `analytics.execute` gives and stores it and the files as the job's artifacts."""

    operation: str
    result: dict[str, Any]
    files: list[ArtifactFile] = field(default_factory=list)


class JobCancelled(Exception):
    """Raised inside `run()` (by `JobContext.check_cancelled`) when the job was
    cancelled or the worker is shutting down."""


class JobFailed(Exception):
    """A plugin's way to fail a job with a reason users see (in `job.error`).

    By default the job fails at once, credits released. `retryable=True` asks for another
    attempt: only for a transient fault, since the input and the data are the same next time.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


@dataclass
class JobContext:
    job_id: str
    attempt: int
    project_id: str
    target_collection_id: str
    sources: dict[str, SourceItem]  # by item id
    workdir: Path
    _progress: Callable[[float, str], None] = field(repr=False, default=lambda f, m: None)
    _cancel: threading.Event = field(repr=False, default_factory=threading.Event)

    def report_progress(self, fraction: float, message: str = "") -> None:
        """Thread-safe; the runtime forwards it to the server (rate-limited)."""
        self._progress(max(0.0, min(1.0, fraction)), message)

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(self.job_id)


class JobPlugin(ABC):
    """Subclass it with the four declarations below, or name a shared definition that holds
    them: ``class ClipPlugin(JobPlugin, definition=CLIP)`` (``geopera_kernel.raster.job_types``)."""

    job_type_id: ClassVar[str]
    description: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    cost_model: ClassVar[CostModel] = CostModel()

    def __init_subclass__(cls, definition: JobTypeDefinition | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if definition is not None:
            cls.job_type_id = definition.id
            cls.description = definition.description
            cls.input_model = definition.input_model
            cls.cost_model = definition.cost

    @classmethod
    def input_schema(cls) -> dict[str, Any]:
        return cls.input_model.model_json_schema()

    @abstractmethod
    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput] | AnalyticsAnswer:
        """Do the work (in a worker thread). Write outputs under `ctx.workdir`. Only the
        built-in `analytics` job type answers an AnalyticsAnswer (the server refuses
        artifacts from any other)."""


class PluginRegistry:
    def __init__(self) -> None:
        self._plugins: dict[str, type[JobPlugin]] = {}

    def register(self, plugin: type[JobPlugin]) -> type[JobPlugin]:
        if plugin.job_type_id in self._plugins:
            raise ValueError(f"job type {plugin.job_type_id!r} is already registered")
        self._plugins[plugin.job_type_id] = plugin
        return plugin

    def get(self, job_type_id: str) -> type[JobPlugin] | None:
        return self._plugins.get(job_type_id)

    def __iter__(self) -> Iterator[type[JobPlugin]]:
        return iter(sorted(self._plugins.values(), key=lambda p: p.job_type_id))
