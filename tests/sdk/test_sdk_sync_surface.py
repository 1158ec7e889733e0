"""The sync client is declared method by method over the asyncio one (`_client.py`):
every public method of each asyncio namespace has its sync twin, so an operation
added to `_aio.py` cannot be missing from `Client`."""

from __future__ import annotations

import inspect

import pytest
from geopera_sdk import _aio, _client

PAIRS = [
    (_aio.AsyncItems, _client.Items),
    (_aio.AsyncProjects, _client.Projects),
    (_aio.AsyncCredits, _client.Credits),
    (_aio.AsyncWebhooks, _client.Webhooks),
    (_aio.AsyncJobs, _client.Jobs),
    (_aio.AsyncJobTypes, _client.JobTypes),
    (_aio.AsyncWorkers, _client.Workers),
    (_aio.AsyncAnalytics, _client.Analytics),
    (_aio.AsyncJob, _client.Job),
]


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethoddescriptor(member))
    }


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_async_method_has_its_sync_twin(async_cls: type, sync_cls: type) -> None:
    missing = _public_methods(async_cls) - set(dir(sync_cls))
    assert not missing, f"{sync_cls.__name__} lacks {sorted(missing)} of {async_cls.__name__}"


def test_the_client_has_every_operation_of_the_async_client() -> None:
    missing = {name for name in _public_methods(_aio.AsyncClient) if not hasattr(_client.Client, name)}
    assert not missing, f"Client lacks {sorted(missing)}"
