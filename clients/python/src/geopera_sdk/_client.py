"""The synchronous client: `Client`, its namespaces, `Job`, `JobWatch`,
`JobsWatch` and `Batch`.

Every operation is written once, in _aio.py. A `Client` holds an `AsyncClient`
whose I/O is grpc's blocking channel (`_io.BlockingIO`: its awaitables never
suspend), and runs that client's coroutines to their end on the calling thread
(`_io.run`): no event loop, no extra thread. This module only says which
operations each class has and which results become which blocking handles;
signatures, docstrings and types come from the asyncio methods (ParamSpec).
"""

from __future__ import annotations

import builtins
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from geopera.v1 import kernel_pb2, resources_pb2
from geopera_sdk._aio import (
    AsyncAnalytics,
    AsyncBatch,
    AsyncClient,
    AsyncCredits,
    AsyncItems,
    AsyncJob,
    AsyncJobs,
    AsyncJobTypes,
    AsyncProjects,
    AsyncWebhooks,
    AsyncWorkers,
    _AsyncWatch,
)
from geopera_sdk._analytics import MethodSpec
from geopera_sdk._base import Configured
from geopera_sdk._errors import GeoperaError
from geopera_sdk._io import BlockingIO, run
from geopera_sdk._job import JobProgress, _JobBase

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

# The asyncio wording of a docstring or annotation -> the blocking one.
_WORDS = re.compile(r"\bAsync(?=[A-Z]\w*)|\basync (?=for |with )|\bawait |\b(?:An async|an async) iterator")


def _reword(text: str) -> str:
    text = _WORDS.sub(lambda m: "An iterator" if m.group().lower() == "an async iterator" else "", text)
    return re.sub(r"\n\n( *)Asyncio: .*?(?=\n\n|$)", "", text, flags=re.S)


def _like(function: Callable[..., Any], method: Callable[..., Any]) -> Any:
    """`function` named, documented and signed as the asyncio `method` it runs."""
    function.__name__ = method.__name__
    function.__qualname__ = _reword(method.__qualname__)
    function.__doc__ = _reword(method.__doc__ or "") or None
    signature = inspect.signature(method)
    returns = signature.return_annotation
    if isinstance(returns, str):  # `from __future__ import annotations`: the text
        returns = _reword(returns)
    function.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return function


def _wrap(method: Callable[..., Any], result: Callable[[Any], Any]) -> Any:
    def call(self: _Facade, *args: Any, **kwargs: Any) -> Any:
        return result(method(self._core, *args, **kwargs))

    return _like(call, method)


# The kinds of method, typed (ParamSpec) so that a blocking call takes what the
# asyncio method takes and says what it returns.


def _blocking(method: Callable[Concatenate[Any, P], Awaitable[R]]) -> Callable[Concatenate[Any, P], R]:
    """An awaited operation, run to its end."""
    return _wrap(method, run)  # type: ignore[no-any-return]


def _answering(
    method: Callable[Concatenate[Any, P], Awaitable[R]], answer: Callable[[R], S]
) -> Callable[Concatenate[Any, P], S]:
    """An awaited operation, run to its end, whose result becomes `answer(result)` (a blocking handle)."""
    return _wrap(method, lambda operation: answer(run(operation)))  # type: ignore[no-any-return]


def _handing(method: Callable[Concatenate[Any, P], R], hand: Callable[[R], S]) -> Callable[Concatenate[Any, P], S]:
    """A method answering an async iterator or a watch at once: `hand(it)` is its blocking twin."""
    return _wrap(method, hand)  # type: ignore[no-any-return]


def _iterating(method: Callable[Concatenate[Any, P], AsyncIterator[T]]) -> Callable[Concatenate[Any, P], Iterator[T]]:
    """A method answering an async iterator (pages, log records, events)."""
    return _wrap(method, _Iterator)  # type: ignore[no-any-return]


def _job(core: AsyncJob) -> Job:
    return Job._of(core)


def _jobs(cores: AsyncIterator[AsyncJob]) -> Iterator[Job]:
    return map(Job._of, _Iterator(cores))


def _same_arguments(
    method: Callable[Concatenate[Any, P], Any],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Any, P], None]]:
    """A constructor that takes what `method` takes."""

    def decorate(constructor: Callable[..., None]) -> Callable[Concatenate[Any, P], None]:
        constructor.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        return constructor

    return decorate


class _Iterator(Iterator[T]):
    """An async iterator of the blocking core as an iterator."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source

    def __iter__(self) -> _Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return run(self._source.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None


class _Facade:
    def __init__(self, core: Any) -> None:
        self._core = core


class Items(_Facade):
    """Catalog items (`items.*`)."""

    get = _blocking(AsyncItems.get)
    list = _iterating(AsyncItems.list)
    create = _blocking(AsyncItems.create)
    register_file = _blocking(AsyncItems.register_file)
    lineage = _blocking(AsyncItems.lineage)


class Projects(_Facade):
    """Projects (`projects.*`)."""

    get = _blocking(AsyncProjects.get)
    list = _iterating(AsyncProjects.list)


class Credits(_Facade):
    """Credits (`credits.*`)."""

    balance = _blocking(AsyncCredits.balance)
    ledger = _iterating(AsyncCredits.ledger)


class Webhooks(_Facade):
    __doc__ = AsyncWebhooks.__doc__

    create = _blocking(AsyncWebhooks.create)
    list = _iterating(AsyncWebhooks.list)
    delete = _blocking(AsyncWebhooks.delete)
    test = _blocking(AsyncWebhooks.test)
    deliveries = _iterating(AsyncWebhooks.deliveries)


class JobTypes(_Facade):
    """Job types (`processing.job_types.*`)."""

    list = _blocking(AsyncJobTypes.list)
    get = _blocking(AsyncJobTypes.get)


class Workers(_Facade):
    """Registered workers (`workers.list`, admin tokens)."""

    list = _blocking(AsyncWorkers.list)


class Jobs(_Facade):
    """Processing jobs (`processing.*`)."""

    create = _answering(AsyncJobs.create, _job)
    create_and_dispatch = _answering(AsyncJobs.create_and_dispatch, _job)
    dispatch = _answering(AsyncJobs.dispatch, _job)
    get = _answering(AsyncJobs.get, _job)
    list = _handing(AsyncJobs.list, _jobs)
    cancel = _answering(AsyncJobs.cancel, _job)
    resubmit = _answering(AsyncJobs.resubmit, _job)
    wait = _answering(AsyncJobs.wait, _job)
    logs = _iterating(AsyncJobs.logs)
    create_batch = _answering(AsyncJobs.create_batch, lambda batch: Batch(batch))
    watch = _handing(AsyncJobs.watch, lambda watch: JobWatch(watch))
    watch_many = _handing(AsyncJobs.watch_many, lambda watch: JobsWatch(watch))

    def wait_all(
        self, jobs: Iterable[Job] | Batch, *, timeout: float | None = None, progress: JobProgress = False
    ) -> builtins.list[Job]:
        cores = [job._core for job in (jobs.jobs if isinstance(jobs, Batch) else jobs)]
        return [Job._of(core) for core in run(self._core.wait_all(cores, timeout=timeout, progress=progress))]

    wait_all.__doc__ = _reword(AsyncJobs.wait_all.__doc__ or "")


class Analytics(_Facade):
    __doc__ = _reword(AsyncAnalytics.__doc__ or "")

    _core: AsyncAnalytics
    operations = _blocking(AsyncAnalytics.operations)
    operation = _blocking(AsyncAnalytics.operation)
    execute = _blocking(AsyncAnalytics.execute)
    submit = _answering(AsyncAnalytics.submit, _job)
    output_schema = _blocking(AsyncAnalytics.output_schema)

    def refresh(self) -> None:
        """Forget the cached method list; it is reloaded at next use."""
        self._core.refresh()

    def _load(self) -> dict[str, MethodSpec]:
        if self._core._specs is None:
            self.operations()
        return self._core._specs or {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._core._method(name, self._load(), is_async=False, execute=self.execute)

    def __dir__(self) -> Iterable[str]:
        names = set(super().__dir__())
        try:
            names.update(self._load())
        except GeoperaError:
            pass
        return sorted(names)


class _Core(AsyncClient):
    """`AsyncClient`'s operations over grpc's blocking channel (see the module's docstring)."""

    _io_type = BlockingIO


class Client(Configured):
    """A synchronous client of the Geopera kernel; thread-safe (calls run on the calling thread).

    ``with Client("127.0.0.1:50051", token) as client:``; the arguments are
    those of `AsyncClient`: `target` is any gRPC target (`host:port`,
    `dns:///host:port`, `ipv4:a:p1,b:p2` for several replicas), `timeout` the
    deadline of one attempt of a unary call, `retries` a `RetryPolicy` or a
    number of retries (UNAVAILABLE only; 0 disables), `credentials` for TLS.
    """

    @_same_arguments(AsyncClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._core = core = _Core(*args, **kwargs)
        self.target: str = core.target
        self._settings = core._settings
        self.items = Items(core.items)
        self.projects = Projects(core.projects)
        self.credits = Credits(core.credits)
        self.jobs = Jobs(core.jobs)
        self.job_types = JobTypes(core.job_types)
        self.workers = Workers(core.workers)
        self.analytics = Analytics(core.analytics)
        self.webhooks = Webhooks(core.webhooks)

    close = _blocking(AsyncClient.close)
    execute = _blocking(AsyncClient.execute)
    clip = _answering(AsyncClient.clip, _job)
    upload = _blocking(AsyncClient.upload)
    download = _blocking(AsyncClient.download)
    sign = _blocking(AsyncClient.sign)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"


class Job(_JobBase):
    """A job handle of `Client`: the latest snapshot plus the calls that act on it."""

    def __init__(self, core: AsyncJob) -> None:
        self._core = core
        core._handle = self  # type: ignore[attr-defined]  # the one handle of this core (see _of)

    @classmethod
    def _of(cls, core: AsyncJob) -> Job:
        handle: Job | None = core.__dict__.get("_handle")
        return handle if handle is not None else cls(core)

    @property
    def proto(self) -> resources_pb2.Job:
        return self._core.proto

    @proto.setter
    def proto(self, value: resources_pb2.Job) -> None:
        self._core.proto = value

    @property
    def result(self) -> Any:
        return self._core.result

    @result.setter
    def result(self, value: Any) -> None:
        self._core.result = value

    refresh = _answering(AsyncJob.refresh, _job)
    cancel = _answering(AsyncJob.cancel, _job)
    dispatch = _answering(AsyncJob.dispatch, _job)
    watch = _iterating(AsyncJob.watch)
    logs = _iterating(AsyncJob.logs)
    wait = _answering(AsyncJob.wait, _job)


class _Watch(_Iterator[kernel_pb2.WatchJobResponse]):
    """A watch of the blocking core as an iterator; `close()` may come from another thread."""

    _source: _AsyncWatch

    @property
    def resumes(self) -> int:
        return self._source.resumes

    def close(self) -> None:
        """Stop watching (cancels the open stream)."""
        run(self._source.aclose())


class JobWatch(_Watch):
    """An iterator over a job's events that resumes after dropped streams.
    `resumes` counts the reconnections, `last_sequence` the latest event."""

    @property
    def job_id(self) -> str:
        return self._source.job_id  # type: ignore[attr-defined,no-any-return]

    @property
    def last_sequence(self) -> int:
        return self._source.last_sequence  # type: ignore[attr-defined,no-any-return]

    @property
    def last_log_sequence(self) -> int:
        return self._source.last_log_sequence  # type: ignore[attr-defined,no-any-return]


class JobsWatch(_Watch):
    """An iterator over the events of many jobs (`WatchJobs`) that resumes
    dropped streams per job: `after_sequences` holds the latest sequence seen
    of each job, `resumes` counts the reconnections."""

    @property
    def after_sequences(self) -> dict[str, int]:
        return self._source.after_sequences  # type: ignore[attr-defined,no-any-return]


class Batch:
    """What `create_batch` answers: `jobs` (the handles of the jobs created,
    in request order), `errors` (the `BatchRequestError` of each request that
    failed, with its `index` and `reason`), `batch_id`, and the raw `result`."""

    def __init__(self, core: AsyncBatch) -> None:
        self._core = core
        self.result = core.result
        self.batch_id = core.batch_id
        self.jobs = [Job._of(job) for job in core.jobs]
        self.errors = core.errors

    def __repr__(self) -> str:
        return repr(self._core)
