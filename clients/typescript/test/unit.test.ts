// Offline tests: the naming rule, Any packing and rich-status parsing.

import assert from "node:assert/strict";
import { test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Metadata } from "@grpc/grpc-js";

import {
  BadRequestSchema,
  Code,
  ErrorInfoSchema,
  errorFromGrpc,
  ExpectedSchemaSchema,
  GeoperaClient,
  InvalidArgumentError,
  JobSchema,
  JobStatus,
  jobStatusWord,
  ProcessingJobsListResultSchema,
  shape,
  toJsonView,
  messageBaseName,
  OPERATIONS,
  paramsTypeName,
  registry,
  resultTypeName,
  StatusSchema,
  STATUS_DETAILS_KEY,
} from "../src/index.js";

test("the naming rule maps operations to params and result messages", () => {
  assert.equal(messageBaseName("clip.create_from_item"), "ClipCreateFromItem");
  assert.equal(paramsTypeName("items.list"), "geopera.v1.ItemsListParams");
  assert.equal(resultTypeName("processing.job_types.get"), "geopera.v1.ProcessingJobTypesGetResult");
  for (const [operation, spec] of Object.entries(OPERATIONS)) {
    assert.equal(spec.params.typeName, paramsTypeName(operation), operation);
    assert.equal(spec.result.typeName, resultTypeName(operation), operation);
    assert.ok(registry.getMessage(spec.params.typeName), `${operation} params are in the registry`);
  }
});

test("params are packed as Any with the contract's type URL", () => {
  const client = new GeoperaClient("127.0.0.1:1", "token");
  try {
    const any = client.packParams("analytics.execute", {
      operation: "zonal_stats",
      params: { item_id: "it_1", geometry: { type: "Polygon", coordinates: [] } },
    });
    assert.equal(any.typeUrl, "type.googleapis.com/geopera.v1.AnalyticsExecuteParams");
    assert.ok(any.value.length > 0);
    const empty = client.packParams("projects.list", undefined);
    assert.equal(empty.typeUrl, "type.googleapis.com/geopera.v1.ProjectsListParams");
    assert.throws(() => client.packParams("no_such.op", {}), InvalidArgumentError);
  } finally {
    client.close();
  }
});

test("a spend call refuses an invalid idempotency key before sending", async () => {
  const client = new GeoperaClient("127.0.0.1:1", "token", { retry: false });
  try {
    await assert.rejects(
      client.jobs.createAndDispatch({ projectId: "p", jobTypeId: "t" }, { idempotencyKey: "" }),
      (err: unknown) => err instanceof InvalidArgumentError && err.reason === "INVALID_IDEMPOTENCY_KEY",
    );
  } finally {
    client.close();
  }
});

test("errors carry code, reason, field violations and the expected schema", () => {
  const status = create(StatusSchema, {
    code: Code.INVALID_ARGUMENT,
    message: "params do not match",
    details: [
      anyPack(
        ErrorInfoSchema,
        create(ErrorInfoSchema, {
          reason: "INVALID_ANALYTICS_PARAMS",
          domain: "geopera.v1",
          metadata: { request_id: "req_1" },
        }),
      ),
      anyPack(
        BadRequestSchema,
        create(BadRequestSchema, {
          fieldViolations: [{ field: "params.geometry", description: "Field required" }],
        }),
      ),
      anyPack(
        ExpectedSchemaSchema,
        create(ExpectedSchemaSchema, { subject: "zonal_stats", jsonSchema: { type: "object" } }),
      ),
    ],
  });
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(toBinary(StatusSchema, status)));
  const grpcError = Object.assign(new Error("3 INVALID_ARGUMENT: params do not match"), {
    code: Code.INVALID_ARGUMENT,
    details: "params do not match",
    metadata,
  });
  const error = errorFromGrpc(grpcError);
  assert.ok(error instanceof InvalidArgumentError);
  assert.equal(error.codeName, "INVALID_ARGUMENT");
  assert.equal(error.reason, "INVALID_ANALYTICS_PARAMS");
  assert.equal(error.domain, "geopera.v1");
  assert.equal(error.requestId, "req_1");
  assert.equal(error.message, "params do not match");
  assert.deepEqual(error.fieldViolations, [{ field: "params.geometry", description: "Field required", reason: "" }]);
  assert.deepEqual(error.expectedSchema, { subject: "zonal_stats", jsonSchema: { type: "object" } });
  assert.equal(error.details.length, 3);
  assert.match(String(error), /INVALID_ARGUMENT INVALID_ANALYTICS_PARAMS: params do not match \[params\.geometry/);
});

test("the JSON view writes job statuses as the product docs do", () => {
  const job = create(JobSchema, { id: "job_1", projectId: "demo", status: JobStatus.DISPATCHED });
  const view = toJsonView(JobSchema, job);
  assert.deepEqual(view, { id: "job_1", project_id: "demo", status: "dispatched" });
  const page = create(ProcessingJobsListResultSchema, {
    jobs: [job, create(JobSchema, { id: "job_2", status: JobStatus.CANCELLED })],
  });
  assert.deepEqual(
    (toJsonView(ProcessingJobsListResultSchema, page)["jobs"] as { status: string }[]).map((j) => j.status),
    ["dispatched", "cancelled"],
  );
  assert.deepEqual(
    [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED].map(jobStatusWord),
    ["pending", "running", "succeeded", "failed"],
  );
});

test("shape puts keys in the schema's order and adds or drops nothing", () => {
  const schema = {
    $defs: { Zone: { type: "object", properties: { index: { type: "integer" }, stats: { type: "object" } } } },
    type: "object",
    properties: { zones: { type: "array", items: { $ref: "#/$defs/Zone" } }, item_id: { type: "string" } },
    propertyOrdering: ["item_id", "zones"],
  };
  const wire = { zones: [{ stats: { mean: 0.5, count: 3 }, extra: 1, index: 0 }], zzz: true, item_id: "it_1", constructor: 2 };
  assert.equal(
    JSON.stringify(shape(wire, schema)),
    JSON.stringify({ item_id: "it_1", zones: [{ index: 0, stats: { count: 3, mean: 0.5 }, extra: 1 }], constructor: 2, zzz: true }),
  );
});
