"""Hypothesis strategies for hostile requests, generated from the protobuf
descriptors of the registry's params messages (and of the streaming RPCs'
requests) and from the JSON Schemas the server publishes for free-form params
(analytics methods, job types).

Every field gets hostile values of its type: extremes, NaN/inf/denormals,
huge and non-ASCII strings (4-byte characters, NUL), out-of-range timestamps
and unknown enum numbers; `Struct` fields get JSON of every type (the "wrong
types" a JSON client can send), nested JSON and invalid or extreme GeoJSON.
Fields whose name says what they hold (`item_id`, `page_token`, `geometry`,
...) also get real values of the server under test and forgeries of them, so
a request gets past the first lookup and reaches the code behind it. Besides
fully hostile messages, a valid request (the corpus's seed) with one or two
fields made hostile reaches deepest.

The same strategies serve the bounded sample in `make test` and the
`make fuzz` runner (`bench/fuzz.py`).
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from geopera.v1 import kernel_pb2
from geopera_kernel.server.api.registry import Operation
from tests.fuzz.corpus import Corpus

FOUR_BYTE = "\U0001d54f"  # 𝕏: four bytes in UTF-8, one character
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "../../../../etc/passwd",
    "/etc/passwd",
    "it_' OR 1=1 --",
    "%(id)s%s%n",
    "{0}{}",
    "\u202eevil",
    "NaN",
    "null",
    "-1",
    "🙂ü",
    "\t\r\n",
    "items/../../etc/passwd",
    "$(reboot)",
    "data\n",  # a good name but for a trailing newline, which a `$`-anchored pattern lets through
]
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
EXTREME_FLOATS = [
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    1e-300,
    1e300,
]
# Timestamp.seconds valid in proto3 JSON: 0001-01-01 .. 9999-12-31.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62135596800, 253402300799
EXTREME_SECONDS = [TIMESTAMP_MIN - 1, TIMESTAMP_MIN, 0, TIMESTAMP_MAX, TIMESTAMP_MAX + 1, *INT64, -1]
EXTREME_NANOS = [0, 999_999_999, 1_000_000_000, -1, *INT32]


@functools.cache
def huge_text() -> SearchStrategy[str]:
    """Long runs of one character: 4-byte characters (trailer size counted in
    bytes), NUL, accents and plain ASCII."""
    return st.builds(
        lambda char, count: char * count,
        st.sampled_from([FOUR_BYTE, "\x00", "é", "x", "🙂"]),
        st.sampled_from([300, 1_000, 4_100, 20_000]),
    )


@functools.cache
def hostile_text() -> SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30), huge_text())


@functools.cache
def hostile_float() -> SearchStrategy[float]:
    return st.one_of(st.sampled_from(EXTREME_FLOATS), st.floats(allow_nan=True, allow_infinity=True))


@functools.cache
def hostile_int(bounds: tuple[int, int]) -> SearchStrategy[int]:
    low, high = bounds
    edges = sorted({low, high, 0, 1, -1 if low < 0 else 0, 1000, 1001})
    return st.one_of(st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high))


# --- JSON (Struct) values -------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), hostile_float(), hostile_int(INT64), hostile_text())


@functools.cache
def hostile_json(max_leaves: int = 8) -> SearchStrategy[Any]:
    """Any JSON value (numbers include NaN/inf: gRPC's Struct carries them)."""
    return st.recursive(
        JSON_SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(hostile_text(), st.text(max_size=8)), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def deeply_nested(depth: int) -> Any:
    value: Any = {"type": "Polygon"}
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


# As deep as a Struct can be built here (protobuf's own limit is 100 levels);
# HTTP bodies go deeper (see test_fuzz_rest.py).
NESTED = st.sampled_from([deeply_nested(50), deeply_nested(99), deeply_nested(101), deeply_nested(150)])


def _ring(points: list[tuple[float, float]]) -> list[list[float]]:
    return [list(p) for p in [*points, points[0]]]


def _box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [_ring([(west, south), (east, south), (east, north), (west, north)])]}


EXTREME_GEOMETRIES: list[dict[str, Any]] = [
    _box(179.5, -1, -179.5, 1),  # crosses the antimeridian, written as RFC 7946 asks not to
    _box(170, -10, 190, 10),  # longitudes past 180
    _box(-180, -90, 180, 90),  # the whole world
    _box(-180, 89.9, 180, 90),  # a pole
    _box(14.5, 46.0, 14.5000000001, 46.0000000001),  # almost no area
    _box(0, 0, 1e300, 1e300),
    _box(-1e308, -1e308, 1e308, 1e308),
    _box(14, 46, 15, 47) | {"coordinates": [[[14, 46], [15, 47], [15, 46], [14, 47], [14, 46]]]},  # bow tie
    {"type": "Polygon", "coordinates": [[[14, 46], [15, 46], [15, 47]]]},  # unclosed
    {"type": "Polygon", "coordinates": []},
    {"type": "Polygon", "coordinates": [[]]},
    {"type": "Polygon", "coordinates": "nope"},
    {"type": "Polygon", "coordinates": [[[14, 46, 1, 2, 3], [15, 46], [15, 47], [14, 46]]]},
    {"type": "Polygon", "coordinates": [[[14, 46], [15, 46], [15, 47], [14, 46]]] * 300},  # many holes
    {"type": "MultiPolygon", "coordinates": [[[[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]]]},
    {"type": "Point", "coordinates": [14.5, 46]},
    {"type": "LineString", "coordinates": [[14, 46], [15, 47]]},
    {"type": "GeometryCollection", "geometries": [_box(14, 46, 15, 47)]},
    {"type": "Feature", "geometry": None, "properties": {}},
    {"type": "FeatureCollection", "features": [None, 1, "x"]},
    {"type": "FeatureCollection", "features": []},
    {"type": "Unknown", "coordinates": [0, 0]},
    {"type": "Polygon", "coordinates": [[[i * 1e-4, math.sin(i) * 1e-4] for i in range(10_000)] + [[0, 0]]]},
]


# Each run tries these where an area goes; the valid but costly ones (the
# world, a pole, 10,000 vertices) only come up in random draws.
CATALOGUE_GEOMETRIES = [g for i, g in enumerate(EXTREME_GEOMETRIES) if i not in (2, 3, len(EXTREME_GEOMETRIES) - 1)]


@st.composite
def _random_polygon(draw: st.DrawFn) -> dict[str, Any]:
    coordinate = st.one_of(st.floats(-200, 200), hostile_float())
    points = draw(st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=6))
    return {"type": draw(st.sampled_from(["Polygon", "MultiPolygon"])), "coordinates": [[list(p) for p in points]]}


def geometries(corpus: Corpus) -> SearchStrategy[Any]:
    """GeoJSON to put where an area goes: the corpus's valid AOI (so the other
    fields are what is tested), wrapped in a Feature, and invalid and extreme ones."""
    valid = corpus.aoi
    return st.one_of(
        st.just(valid),
        st.just({"type": "Feature", "properties": {}, "geometry": valid}),
        st.sampled_from(EXTREME_GEOMETRIES),
        _random_polygon(),
        hostile_json(4),
    )


# --- ids and tokens -------------------------------------------------------

ID_PREFIXES = ["it", "job", "up", "art", "tok", "wk", "prj"]


def forged_ids(real: tuple[str, ...]) -> SearchStrategy[str]:
    """Real ids (of every project), ids of the right shape that do not exist,
    ids with another resource's prefix and tampered real ones."""
    shaped = st.builds(
        lambda prefix, body: f"{prefix}_{body}",
        st.sampled_from(ID_PREFIXES),
        st.text(alphabet="0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26),
    )
    options: list[SearchStrategy[str]] = [shaped, hostile_text()]
    if real:
        picked = st.sampled_from(real)
        options = [picked, picked, picked.map(lambda s: s.upper()), picked.map(lambda s: s + "\x00"), *options]
    return st.one_of(*options)


BASE64_URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def _tampered_token(draw: st.DrawFn, real: tuple[str, ...]) -> str:
    """A token the server issued, decoded as an attacker would (url-safe base64
    of JSON, when it is) and re-encoded with hostile cursor values."""
    token = draw(st.sampled_from(real))
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        body = None
    if isinstance(body, dict) and body:
        key = draw(st.sampled_from(sorted(body)))
        inner = body[key]
        if isinstance(inner, dict) and inner and draw(st.booleans()):
            inner[draw(st.sampled_from(sorted(inner)))] = draw(hostile_json(4))
        else:
            body[key] = draw(hostile_json(4))
        return _b64(json.dumps(body, allow_nan=True).encode())
    cut = draw(st.integers(0, len(token)))
    return token[:cut] + draw(st.text(alphabet=BASE64_URL, max_size=4))


FORGED_CURSOR_VALUES: list[Any] = [None, 1, -1, [1], {"a": 1}, "x", "\x00", "9999-99-99T99:99:99", 1e308]


def forged_page_tokens(real: tuple[str, ...]) -> list[str]:
    """Each token the server issued, with each of its cursor's values replaced
    by each forged value (the filters' fingerprint kept), as an attacker who
    decoded the url-safe base64 JSON would send them."""
    forged = []
    for token in real:
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except ValueError:
            continue
        cursor = body.get("c") if isinstance(body, dict) else None
        for key in sorted(cursor) if isinstance(cursor, dict) else []:
            for value in FORGED_CURSOR_VALUES:
                changed = {**body, "c": {**cursor, key: value}}
                forged.append(_b64(json.dumps(changed).encode()))
    return forged


def page_tokens(real: tuple[str, ...]) -> SearchStrategy[str]:
    forged_json = hostile_json(4).map(lambda v: _b64(json.dumps(v, allow_nan=True).encode()))
    options: list[SearchStrategy[str]] = [forged_json, st.binary(max_size=64).map(_b64), hostile_text()]
    if real:
        options = [st.sampled_from(real), _tampered_token(real), _tampered_token(real), *options]
    return st.one_of(*options)


# --- values by field name -------------------------------------------------


def _real_or_near(real: list[str] | tuple[str, ...]) -> SearchStrategy[str]:
    """A real value, one with a trailing newline (a near miss a `$`-anchored check
    passes), or hostile text."""
    values = sorted(real)
    return st.one_of(st.sampled_from(values), st.sampled_from(values).map(lambda v: v + "\n"), hostile_text())


def named_values(name: str, corpus: Corpus) -> SearchStrategy[Any] | None:
    """Values for a field (or JSON property) whose name says what it holds."""
    if name in ("item_id", "source_item_id") or name.endswith("_item_id"):
        return forged_ids(corpus.item_ids)
    if name in ("item_ids", "source_item_ids"):
        return st.lists(forged_ids(corpus.item_ids), max_size=4)
    if name == "job_id":
        return forged_ids(corpus.job_ids)
    if name == "upload_id":
        return forged_ids(corpus.upload_ids)
    if name == "project_id":
        return _real_or_near(corpus.project_ids)
    if name in ("collection_id", "target_collection_id"):
        return _real_or_near(corpus.collection_ids)
    if name == "job_type_id":
        return _real_or_near(list(corpus.job_types))
    if name in ("name", "operation") and corpus.analytics:
        return st.one_of(st.sampled_from(sorted(corpus.analytics)), hostile_text())
    if name == "page_token":
        return page_tokens(corpus.all_page_tokens())
    if name == "resource_name":
        return st.one_of(st.sampled_from(corpus.resource_names), forged_resource_names(corpus))
    if name in ("geometry", "aoi_geometry", "intersects", "zones"):
        return geometries(corpus)
    if name == "band_mapping":
        common = st.sampled_from(["red", "RED", "nir", "NIR", "green", "blue", "swir16", "B04", "bogus", ""])
        band = st.one_of(hostile_int(INT64), st.integers(1, 4), hostile_text(), hostile_float(), hostile_json(3))
        return st.dictionaries(common, band, max_size=3)
    if name == "range":
        return st.lists(hostile_float(), min_size=0, max_size=3)
    return None


def forged_resource_names(corpus: Corpus) -> SearchStrategy[str]:
    return st.builds(
        lambda kind, ident, tail: f"{kind}/{ident}{tail}",
        st.sampled_from(["items", "artifacts", "jobs", "..", ""]),
        forged_ids(corpus.item_ids + corpus.artifact_ids),
        st.sampled_from(["", "/assets/data", "/assets/../../x", "/assets/" + FOUR_BYTE * 2000, "/assets/"]),
    )


# --- JSON from a published JSON Schema ------------------------------------


def from_schema(
    schema: Any, root: dict[str, Any], corpus: Corpus, name: str = "", depth: int = 0
) -> SearchStrategy[Any]:
    """JSON shaped by `schema` (properties, types, enums, arrays), with hostile
    values mixed in at every level and name-aware values where a property's
    name says what it holds. Not a complete JSON Schema generator: enough to
    reach past the first validation of free-form params."""
    named = named_values(name, corpus) if name else None
    hostile = hostile_json(4)
    if not isinstance(schema, dict) or depth > 6:
        return named or hostile
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return from_schema(target, root, corpus, name, depth + 1)
    shaped: SearchStrategy[Any] | None = None
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            shaped = st.one_of(*(from_schema(s, root, corpus, name, depth + 1) for s in schema[key]))
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        shaped = st.sampled_from(schema["enum"])
    elif "const" in schema:
        shaped = st.just(schema["const"])
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if (shaped is None and "object" in kinds) or isinstance(schema.get("properties"), dict):
        properties = schema.get("properties") or {}
        required = [k for k in schema.get("required", []) if k in properties]
        shaped = st.fixed_dictionaries(
            {k: from_schema(properties[k], root, corpus, k, depth + 1) for k in required},
            optional={
                **{k: from_schema(v, root, corpus, k, depth + 1) for k, v in properties.items() if k not in required},
                FOUR_BYTE * 3: hostile,  # a property nobody declared
            },
        )
    elif shaped is None and "array" in kinds:
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        most = min(int(schema.get("maxItems", 5)), 8)
        shaped = st.lists(from_schema(items, root, corpus, "", depth + 1), max_size=most)
    elif shaped is None and "number" in kinds:
        low, high = schema.get("minimum"), schema.get("maximum")
        bounded = low is not None and high is not None
        plausible = st.floats(low, high, allow_nan=False) if bounded else st.floats(-1e6, 1e6)
        shaped = st.one_of(plausible, hostile_float())
    elif shaped is None and "integer" in kinds:
        low, high = schema.get("minimum", -1000), schema.get("maximum", 1000)
        shaped = st.one_of(st.integers(int(low), int(high)), hostile_int(INT64))
    elif shaped is None and "string" in kinds:
        shaped = hostile_text()
    elif shaped is None and "boolean" in kinds:
        shaped = st.booleans()
    options = [s for s in (named, shaped) if s is not None] or [hostile]
    return st.one_of(*options, *options, hostile)


# --- protobuf messages ----------------------------------------------------

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}


def timestamps() -> SearchStrategy[timestamp_pb2.Timestamp]:
    seconds = st.one_of(st.sampled_from(EXTREME_SECONDS), st.integers(*INT64), st.integers(0, 4_000_000_000))
    nanos = st.one_of(st.sampled_from(EXTREME_NANOS), st.integers(*INT32))
    return st.builds(lambda s, n: timestamp_pb2.Timestamp(seconds=s, nanos=n), seconds, nanos)


def _struct_of(value: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value if isinstance(value, dict) else {"value": value})
    return message


# The operations whose `params` are an analytics method's (the synchronous call and the job).
ANALYTICS_CALLS = ("analytics.execute", "analytics.submit")


def struct_values(name: str, corpus: Corpus, context: str) -> SearchStrategy[dict[str, Any]]:
    """A Struct's content: by field (and, for free-form params, by the
    operation's published schemas), or JSON of any shape."""
    schemas: list[tuple[str, dict[str, Any]]] = []
    if name == "input_params":
        schemas = sorted(corpus.job_types.items())
    elif name == "params" and context in ANALYTICS_CALLS:
        schemas = sorted(corpus.analytics.items())
    options: list[SearchStrategy[Any]] = [from_schema(s, s, corpus, "", 0) for _, s in schemas]
    named = named_values(name, corpus)
    if named is not None:
        options.append(named)
    options += [hostile_json(), NESTED]
    return st.one_of(*options).map(lambda v: v if isinstance(v, dict) else {"value": v})


def field_values(field: FieldDescriptor, corpus: Corpus, context: str, depth: int = 0) -> SearchStrategy[Any]:
    """Values of one field (a list for a repeated one): Python values for
    scalars, messages for message fields."""
    single = _single_values(field, corpus, context, depth)
    if field.is_repeated:
        named = named_values(field.name, corpus)
        lists = st.lists(single, max_size=4)
        if field.type == FieldDescriptor.TYPE_DOUBLE and field.name == "bbox":
            plausible = st.sampled_from([[13, 45, 16, 47], [170, -10, -170, 10], [16, 47, 13, 45], [0, 0, 0, 0]])
            return st.one_of(lists, plausible.map(lambda b: [float(x) for x in b]))
        return st.one_of(lists, named) if named is not None and field.type == FieldDescriptor.TYPE_STRING else lists
    return single


def _single_values(field: FieldDescriptor, corpus: Corpus, context: str, depth: int) -> SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full_name = field.message_type.full_name
        if full_name == "google.protobuf.Timestamp":
            return timestamps()
        if full_name == "google.protobuf.Struct":
            return struct_values(field.name, corpus, context).map(_struct_of)
        return messages(field.message_type, corpus, context, depth + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        named = None if field.is_repeated else named_values(field.name, corpus)
        return st.one_of(named, named, hostile_text()) if named is not None else hostile_text()
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return hostile_float()
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), hostile_int(INT32))  # proto3 enums are open
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"\xff" * 5000, b"II*\x00" + b"\x00" * 100]))
    return hostile_int(_INT_BOUNDS[field.type])


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    message.ClearField(field.name)
    target = getattr(message, field.name)
    if field.is_repeated:
        for element in value:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                target.add().CopyFrom(element)
            else:
                target.append(element)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _settable(descriptor: Descriptor) -> list[FieldDescriptor]:
    return [f for f in descriptor.fields if not (f.message_type is not None and f.message_type.GetOptions().map_entry)]


def messages(descriptor: Descriptor, corpus: Corpus, context: str, depth: int = 0) -> SearchStrategy[Message]:
    """A message of `descriptor` with any subset of its fields set to hostile values."""
    cls = _message_class(descriptor)
    fields = [(f, field_values(f, corpus, context, depth)) for f in (_settable(descriptor) if depth < 3 else [])]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field, values in fields:
            if draw(st.booleans()):
                _assign(message, field, draw(values))
        return message

    return build()


# --- one hostile part of a valid request ---------------------------------

STRUCT = "google.protobuf.Struct"


@dataclass(frozen=True)
class Focus:
    """One part of a valid request (`base`) to make hostile: a field of the
    params message, or a property (`keys`) inside one of its Struct fields,
    whose published JSON Schema (`schema`, within `root`) says what it holds."""

    base: Message
    field: str
    keys: tuple[str, ...] = ()
    schema: Any = None
    root: Any = None

    def __repr__(self) -> str:
        where = ".".join((self.field, *self.keys))
        subject = getattr(self.base, "operation", "") or getattr(self.base, "job_type_id", "")
        return f"Focus({where}{' of ' + subject if subject else ''})"


def _resolve(schema: Any, root: Any) -> Any:
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 10:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema, seen = target, seen + 1
    return schema


def _object_properties(schema: Any, root: Any) -> dict[str, Any]:
    """The properties of an object schema, looking through `$ref` and `anyOf`."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return {}
    found = dict(schema.get("properties") or {})
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key) or []:
            found.update(_object_properties(option, root))
    return found


def valid_json(schema: Any, root: Any, corpus: Corpus, name: str = "", depth: int = 0) -> Any:
    """A plausible valid instance of `schema` (required properties only), with
    the corpus's real values where a property's name says what it holds."""
    if name in ("item_id", "source_item_id", "before_item_id", "after_item_id"):
        return corpus.item_ids[0]
    if name == "item_ids":
        return list(corpus.item_ids[:2])
    if name in ("geometry", "aoi_geometry"):
        return corpus.aoi
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 5:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return valid_json(schema[key][0], root, corpus, name, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = [k for k in schema.get("required", []) if k in properties]
        return {k: valid_json(properties[k], root, corpus, k, depth + 1) for k in required}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 1)
        value = (low + high) / 2
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return "x"


def typed_extremes(schema: Any, root: Any, corpus: Corpus, name: str = "", depth: int = 0) -> SearchStrategy[Any]:
    """Values of the type `schema` asks for, at its extremes (bounds, +-1 past
    them, NaN/inf/denormals, huge and odd strings), and values of other types."""
    named = named_values(name, corpus) if name else None
    schema = _resolve(schema, root)
    options: list[SearchStrategy[Any]] = [named] if named is not None else []
    if isinstance(schema, dict) and depth < 4:
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options += [typed_extremes(s, root, corpus, "", depth + 1) for s in schema[key]]
        kind = schema.get("type")
        if schema.get("enum"):
            enum = [e for e in schema["enum"] if isinstance(e, str)]
            options.append(st.sampled_from([*(e.lower() for e in enum), *(e + "\x00" for e in enum)] or [""]))
        elif kind == "number":
            options.append(hostile_float())
        elif kind == "integer":
            low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 2**31))
            options.append(st.sampled_from([low - 1, low, high, high + 1, 2**53 + 1, *INT64]))
        elif kind == "string":
            options.append(hostile_text())
        elif kind == "array":
            prefix = schema.get("prefixItems")
            if isinstance(prefix, list) and prefix:
                options.append(st.tuples(*(typed_extremes(p, root, corpus, "", depth + 1) for p in prefix)).map(list))
            item = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            most = int(schema.get("maxItems", 4))
            options.append(st.lists(typed_extremes(item, root, corpus, "", depth + 1), max_size=min(most + 1, 6)))
        elif kind == "object" or "properties" in schema:
            properties = schema.get("properties") or {}
            options.append(
                st.fixed_dictionaries(
                    {}, optional={k: typed_extremes(v, root, corpus, k, depth + 1) for k, v in properties.items()}
                )
            )
    options.append(hostile_json(4))
    return st.one_of(*options)


def focus_points(operation: Operation, corpus: Corpus) -> list[Focus]:
    """Every part of the operation's valid requests to attack one at a time:
    each params field, and each property (nested ones too) of its free-form
    params as the published schemas declare them, plus one nobody declared."""
    seed = corpus.seed(operation)
    if seed is None:
        return []
    bases: list[tuple[Message, dict[str, Any] | None]] = [(seed, None)]
    if operation.name in ANALYTICS_CALLS:
        # The seeded method as seeded; every other method from a valid instance of its schema.
        method = seed.operation  # type: ignore[attr-defined]
        bases = [(seed, corpus.analytics.get(method))]
        bases += [(_with_struct(seed, "operation", m, "params", valid_json(s, s, corpus)), s)
                  for m, s in sorted(corpus.analytics.items()) if m != method]  # fmt: skip
    elif "input_params" in seed.DESCRIPTOR.fields_by_name and "job_type_id" in seed.DESCRIPTOR.fields_by_name:
        bases = [(seed, corpus.job_types.get(seed.job_type_id))]  # type: ignore[attr-defined]
    elif "input_params" in seed.DESCRIPTOR.fields_by_name:  # resubmit's overrides: the job's type is elsewhere
        bases = [(seed, None)]
    points: list[Focus] = []
    for base, schema in bases:
        for field in _settable(base.DESCRIPTOR):
            if base is not seed and field.message_type is None:
                continue  # the plain fields are attacked once, on the seed
            points.append(Focus(base, field.name))
            if field.message_type is None or field.message_type.full_name != STRUCT:
                continue
            present = _struct_to_dict(getattr(base, field.name)) if base.HasField(field.name) else {}
            declared = _object_properties(schema, schema) if schema else {}
            for key in sorted({*present, *declared, FOUR_BYTE}):
                points.append(Focus(base, field.name, (key,), declared.get(key), schema))
                for inner, sub in sorted(_object_properties(declared.get(key), schema).items()):
                    points.append(Focus(base, field.name, (key, inner), sub, schema))
    return points


def _with_struct(seed: Message, name_field: str, name: str, struct_field: str, content: Any) -> Message:
    message = type(seed)()
    message.CopyFrom(seed)
    setattr(message, name_field, name)
    _assign(message, message.DESCRIPTOR.fields_by_name[struct_field], _struct_of(content))
    return message


def _set_focus(focus: Focus, value: Any) -> Message:
    """A copy of `focus.base` with `value` at the focused part."""
    message = type(focus.base)()
    message.CopyFrom(focus.base)
    field = message.DESCRIPTOR.fields_by_name[focus.field]
    if not focus.keys:
        _assign(message, field, value)
        return message
    content = _struct_to_dict(getattr(message, focus.field)) if message.HasField(focus.field) else {}
    target = content
    for key in focus.keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[focus.keys[-1]] = value
    _assign(message, field, _struct_of(content))
    return message


def focused(focus: Focus, corpus: Corpus, context: str) -> SearchStrategy[Message]:
    """`focus.base` with the focused part set to a hostile value."""
    if not focus.keys:
        values = field_values(focus.base.DESCRIPTOR.fields_by_name[focus.field], corpus, context)
    else:
        values = typed_extremes(focus.schema, focus.root, corpus, focus.keys[-1])
    return values.map(lambda value: _set_focus(focus, value))


GEOMETRY_NAMES = frozenset({"geometry", "aoi_geometry", "intersects"})
CATALOGUE_FLOATS = [math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, -0.0]
CATALOGUE_RANGES = [[0.0, 5e-324], [0.0, math.inf], [-math.inf, math.inf], [-1e308, 1e308], [math.nan, 1.0]]


def catalogue(focus: Focus, corpus: Corpus) -> list[Message]:
    """The known-hostile values every run tries at the focused part (random
    draws explore beyond them): each extreme geometry where an area goes, the
    float extremes where a number (or a [min, max] pair) goes, and the
    server's own page tokens with each cursor value forged."""
    name = focus.keys[-1] if focus.keys else focus.field
    schema = _resolve(focus.schema, focus.root) if focus.keys else None
    values: list[Any] = []
    if name == "page_token":
        return [_set_focus(focus, token) for token in forged_page_tokens(corpus.all_page_tokens())]
    if name in GEOMETRY_NAMES:
        values = CATALOGUE_GEOMETRIES
    elif isinstance(schema, dict):
        kinds = {schema.get("type"), *(_resolve(o, focus.root).get("type") for o in schema.get("anyOf", []))}
        prefix = [_resolve(o, focus.root) for o in schema.get("anyOf", []) if "prefixItems" in _resolve(o, focus.root)]
        if "prefixItems" in schema or prefix:
            values = CATALOGUE_RANGES
        elif "number" in kinds:
            values = CATALOGUE_FLOATS
    if not focus.keys and values:
        values = [_struct_of(v) for v in values]
    return [_set_focus(focus, value) for value in values]


def _struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def _message_class(descriptor: Descriptor) -> Callable[[], Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def params(operation: Operation, corpus: Corpus) -> SearchStrategy[Message]:
    """Params of `operation`: fully hostile, or a valid request with one part hostile."""
    hostile = messages(operation.params_type.DESCRIPTOR, corpus, operation.name)
    points = focus_points(operation, corpus)
    if not points:
        return hostile
    one_part = st.one_of(*(focused(focus, corpus, operation.name) for focus in points))
    return st.one_of(hostile, one_part, one_part)


def pack(operation: Operation, message: Message, validate_only: bool = False) -> kernel_pb2.ExecuteRequest:
    packed = any_pb2.Any()
    packed.Pack(message)
    return kernel_pb2.ExecuteRequest(operation=operation.name, params=packed, validate_only=validate_only)


# --- Execute envelopes ----------------------------------------------------


@st.composite
def _wrong_wire_bytes(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """A field encoded with another wire type, or a string field carrying
    invalid UTF-8: bytes a JSON-less client can still send."""
    fields = list(descriptor.fields)
    if not fields:
        return draw(st.binary(max_size=32))
    field = draw(st.sampled_from(fields))
    wire = draw(st.sampled_from([0, 1, 2, 5]))
    payload = {0: b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x01", 1: b"\xff" * 8, 2: b"\x02\xff\xfe", 5: b"\x00" * 4}[wire]
    tag = _varint((field.number << 3) | wire)
    return tag + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def execute_requests(operation: Operation, corpus: Corpus) -> SearchStrategy[kernel_pb2.ExecuteRequest]:
    """`ExecuteRequest`s for `operation`: mostly well-typed hostile params, and
    some whose `Any` is of another type, or carries undecodable bytes."""
    type_url = operation.params_type_url

    other_type = "type.googleapis.com/google.protobuf.Struct"
    raw = st.builds(
        lambda url, value: kernel_pb2.ExecuteRequest(
            operation=operation.name, params=any_pb2.Any(type_url=url, value=value)
        ),
        st.one_of(st.just(type_url), st.just(type_url), hostile_text(), st.just(other_type)),
        st.one_of(_wrong_wire_bytes(operation.params_type.DESCRIPTOR), st.binary(max_size=64)),
    )
    typed = params(operation, corpus).map(lambda message: pack(operation, message))
    # ExecuteRequest.validate_only: the same hostile params, validated without acting.
    validated = params(operation, corpus).map(lambda message: pack(operation, message, validate_only=True))
    return st.one_of(typed, typed, typed, validated, raw)


def stream_requests(descriptor: Descriptor, corpus: Corpus, context: str) -> SearchStrategy[Message]:
    """The first message of a streaming RPC: every field hostile or real."""
    return messages(descriptor, corpus, context)
