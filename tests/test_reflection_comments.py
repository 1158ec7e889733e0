"""Reflection serves the compiled descriptors plus the proto comments: the comments must
belong to the same files (the same elements at the same paths), or grpcurl would print a
comment beside the wrong field."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

import geopera_kernel.server.app  # noqa: F401  (imports every geopera.v1 module, as the server does)
from geopera_kernel.server.api.reflection import DocumentedPool, _documented_files


def _without_docs(proto: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(proto)
    copy.ClearField("source_code_info")
    for message in _messages(copy.message_type):
        for field in message.field:
            field.ClearField("json_name")
        for extension in message.extension:
            extension.ClearField("json_name")
    for extension in copy.extension:
        extension.ClearField("json_name")
    return copy


def _messages(messages):
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


def test_every_documented_file_is_the_compiled_file_plus_comments():
    documented = _documented_files()
    ours = [name for name in documented if name.startswith("geopera/")]
    assert len(ours) >= 8
    for name in ours:
        compiled = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(compiled)
        assert _without_docs(documented[name]) == _without_docs(compiled), name


def test_the_pool_gives_a_symbols_file_with_its_comments_and_its_imports():
    served = DocumentedPool().FindFileContainingSymbol("geopera.v1.ClipCreateFromItemParams")
    proto = descriptor_pb2.FileDescriptorProto()
    served.CopyToProto(proto)
    comments = [location.leading_comments for location in proto.source_code_info.location]
    assert " Assets to clip; empty means every raster asset of the source.\n" in comments
    assert {d.name for d in served.dependencies} >= {"google/protobuf/struct.proto", "geopera/v1/resources.proto"}
