"""Server reflection that keeps the proto comments.

The compiled `_pb2` modules register descriptors without source info, so grpc_reflection
alone answers `grpcurl describe` with bare fields. The proto comments are the contract, so
reflection serves each of our files (and its imports) from the descriptor set that
`scripts/gen_protos.py` writes with `--include_source_info`; any other file (health,
reflection itself) comes from the default pool as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

DESCRIPTOR_SET = ("geopera.v1", "descriptors.binpb")


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    package, name = DESCRIPTOR_SET
    data = resources.files(package).joinpath(name).read_bytes()
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class _DocumentedFile:
    """A file descriptor of the default pool whose CopyToProto adds the comments."""

    def __init__(self, file: Any, documented: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._file = file
        self._documented = documented

    @property
    def name(self) -> str:
        return self._file.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [_DocumentedFile(d, self._documented) for d in self._file.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        # The compiled descriptor as it is (JSON names included, so grpcurl prints what it
        # printed before) plus the comments; both come from the same .proto files.
        self._file.CopyToProto(proto)
        documented = self._documented.get(self._file.name)
        if documented is not None:
            proto.source_code_info.CopyFrom(documented.source_code_info)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._file, attribute)


class DocumentedPool:
    """The default descriptor pool, answering file lookups with documented files."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._documented = _documented_files()

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._pool, attribute)


def enable(service_names: Iterable[str], server: Any) -> None:
    names = (*service_names, reflection.SERVICE_NAME)
    # DocumentedPool stands in for a DescriptorPool by duck typing (the methods reflection calls).
    reflection.enable_server_reflection(names, server, pool=DocumentedPool())  # type: ignore[arg-type]
