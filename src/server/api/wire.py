"""Protobuf wire encoding by hand, for the few messages the hot path sends as
bytes it already has (items.get: an item's stored encoding goes out as it is,
never parsed into a message and serialized again). Only length-delimited
fields (strings, bytes, messages) are needed; see
https://protobuf.dev/programming-guides/encoding/."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

TYPE_URL_PREFIX = "type.googleapis.com/"


def descriptor_of(message_type: type[Message]) -> Descriptor:
    """A message type's descriptor as a `Descriptor`: the stubs type DESCRIPTOR as
    that or upb's class, whose instances are `Descriptor`s at run time."""
    descriptor = message_type.DESCRIPTOR
    assert isinstance(descriptor, Descriptor)
    return descriptor


_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def varint(value: int) -> bytes:
    # Lengths and keys are mostly under 16 KiB: one or two bytes, without a loop.
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field_number: int) -> bytes:
    """The key of field `field_number` with wire type 2 (length-delimited)."""
    return varint(field_number << 3 | 2)


def length_delimited(field_number: int, data: bytes) -> bytes:
    """Field `field_number` (wire type 2) holding `data`. Proto3 leaves an
    empty field out, and so does this (the bytes then equal protobuf's own)."""
    if not data:
        return b""
    return b"".join((tag(field_number), varint(len(data)), data))


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """An operation's result already in its wire encoding. `Execute` sends the
    bytes as they are; projections that need the message (REST's JSON) decode it."""

    type: type[Message]
    data: bytes

    def message(self) -> Message:
        return self.type.FromString(self.data)


def result_message(result: Message | EncodedResult) -> Message:
    return result.message() if isinstance(result, EncodedResult) else result


def result_bytes(result: Message | EncodedResult) -> bytes:
    return result.data if isinstance(result, EncodedResult) else result.SerializeToString()


# google.protobuf.Any's `value` (field 2) key.
ANY_VALUE_TAG = b"\x12"
