// End-to-end tests against a LIVE Geopera server with a worker that runs the
// test job types (`test_cog`). The server comes from the environment:
//
//   GEOPERA_TARGET    host:port of the gRPC server
//   GEOPERA_TOKEN     a user token with the default scopes on GEOPERA_PROJECT
//   GEOPERA_PROJECT   the project to create jobs in
//   GEOPERA_ITEM_ID   the s2l1c_slovenia_20150711_bgrn sample item (B, G, R, NIR)
//
// A missing variable fails every test: this suite never skips silently.
// tests/test_typescript_client.py starts such a server and runs `npm test`.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";

import {
  Code,
  CreditsBalanceGetParamsSchema,
  FailedPreconditionError,
  GeoperaClient,
  InvalidArgumentError,
  JobStatus,
  NotFoundError,
  UnauthenticatedError,
  GeoperaError,
  type GeoJSONArea,
  type WatchJobResponse,
} from "../src/index.js";

const REQUIRED = ["GEOPERA_TARGET", "GEOPERA_TOKEN", "GEOPERA_PROJECT", "GEOPERA_ITEM_ID"] as const;
const missing = REQUIRED.filter((name) => !process.env[name]);
const env = Object.fromEntries(REQUIRED.map((name) => [name, process.env[name] ?? ""])) as Record<
  (typeof REQUIRED)[number],
  string
>;

const AOI: GeoJSONArea = {
  type: "Polygon",
  coordinates: [
    [
      [14.555, 45.868],
      [14.56, 45.868],
      [14.56, 45.872],
      [14.555, 45.872],
      [14.555, 45.868],
    ],
  ],
};

async function collect(iterable: AsyncIterable<WatchJobResponse>): Promise<WatchJobResponse[]> {
  const events: WatchJobResponse[] = [];
  for await (const event of iterable) events.push(event);
  return events;
}

function assertContiguous(events: WatchJobResponse[]): void {
  const sequences = events.map((e) => e.sequence);
  for (let i = 1; i < sequences.length; i++) {
    assert.equal(sequences[i], sequences[i - 1] + 1n, `sequences not contiguous: ${sequences.join(",")}`);
  }
}

async function rejectsWith<E extends GeoperaError>(
  promise: Promise<unknown>,
  cls: new (...args: never[]) => E,
  code: Code,
  reason: string,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    assert.equal(err.code, code, String(err));
    assert.equal(err.reason, reason, String(err));
    return err;
  }
  assert.fail(`expected ${cls.name} ${reason}, the call succeeded`);
}

/** A loopback TCP proxy whose open connections can be cut, to drop a stream mid-flight. */
class DroppingProxy {
  private readonly sockets = new Set<net.Socket>();
  private constructor(private readonly server: net.Server) {}

  static async start(target: string): Promise<DroppingProxy> {
    const split = target.lastIndexOf(":");
    const host = target.slice(0, split).replace(/^\[|\]$/g, "");
    const port = Number(target.slice(split + 1));
    const server = net.createServer();
    const proxy = new DroppingProxy(server);
    server.on("connection", (downstream) => {
      const upstream = net.connect(port, host);
      for (const socket of [downstream, upstream]) {
        proxy.sockets.add(socket);
        socket.on("close", () => proxy.sockets.delete(socket));
        socket.on("error", () => {
          downstream.destroy();
          upstream.destroy();
        });
      }
      downstream.pipe(upstream);
      upstream.pipe(downstream);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get target(): string {
    return `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /** Cuts every open connection (new ones still get through). */
  drop(): number {
    const count = this.sockets.size;
    for (const socket of this.sockets) socket.destroy();
    return count;
  }

  async close(): Promise<void> {
    this.drop();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe("live server", () => {
  let client: GeoperaClient;

  before(() => {
    if (missing.length) {
      throw new Error(
        `set ${missing.join(", ")} to run the TypeScript client against a live server ` +
          "(tests/test_typescript_client.py does this)",
      );
    }
    client = new GeoperaClient(env.GEOPERA_TARGET, env.GEOPERA_TOKEN, { timeoutMs: 30_000 });
  });

  after(() => client?.close());

  test("items.get and items.list return typed items", async () => {
    const item = await client.items.get(env.GEOPERA_ITEM_ID);
    assert.equal(item.id, env.GEOPERA_ITEM_ID);
    assert.equal(item.projectId, env.GEOPERA_PROJECT);
    assert.equal(item.name, "s2l1c_slovenia_20150711_bgrn");
    assert.ok(item.assets["data"], "the item has a data asset");
    assert.equal(item.assets["data"].bands.length, 4);
    assert.equal(item.geometry?.["type"], "Polygon");

    const page = await client.items.list({ projectId: env.GEOPERA_PROJECT, pageSize: 1, intersects: AOI as never });
    assert.equal(page.$typeName, "geopera.v1.ItemsListResult");
    assert.equal(page.items.length, 1);
    const all = [];
    for await (const listed of client.items.iterate({ projectId: env.GEOPERA_PROJECT, pageSize: 2 })) all.push(listed);
    assert.ok(all.some((listed) => listed.id === env.GEOPERA_ITEM_ID));
    assert.equal(new Set(all.map((listed) => listed.id)).size, all.length, "pages do not overlap");
  });

  test("execute packs params into Any by the naming rule", async () => {
    const result = await client.execute("credits.balance.get", { projectId: env.GEOPERA_PROJECT });
    assert.equal(result.$typeName, "geopera.v1.CreditsBalanceGetResult");
    assert.equal(result.balance?.projectId, env.GEOPERA_PROJECT);
    assert.ok(typeof result.balance?.available === "bigint");

    // A message works as well as an init object.
    const message = create(CreditsBalanceGetParamsSchema, { projectId: env.GEOPERA_PROJECT });
    const again = await client.execute("credits.balance.get", message);
    assert.equal(again.balance?.projectId, env.GEOPERA_PROJECT);

    // An operation this client does not know reaches the server as an Any.
    const unknown = create(AnySchema, { typeUrl: "type.googleapis.com/geopera.v1.NoSuchOpParams" });
    const error = await rejectsWith(
      client.execute("no_such.op", unknown),
      InvalidArgumentError,
      Code.INVALID_ARGUMENT,
      "UNKNOWN_OPERATION",
    );
    assert.match(error.metadata["known_operations"] ?? "", /items\.list/);
  });

  test("create_and_dispatch runs test_cog to SUCCEEDED and WatchJob streams it", async () => {
    const inputParams = {
      name: `ts_client_${randomUUID().slice(0, 8)}`,
      source_item_ids: [env.GEOPERA_ITEM_ID],
      steps: 4,
      step_seconds: 0.2,
    };
    const created = await client.jobs.createAndDispatch({
      projectId: env.GEOPERA_PROJECT,
      jobTypeId: "test_cog",
      inputParams,
    });
    const job = created.job;
    assert.match(created.idempotencyKey, /^[0-9a-f-]{36}$/, "a key is generated by default");
    assert.match(job.id, /^job_/);
    assert.equal(job.jobTypeId, "test_cog");
    assert.equal(job.status, JobStatus.DISPATCHED);
    assert.equal(created.dispatch?.accepted, true);

    // The same key and params replay the first response: no second job.
    const replay = await client.jobs.createAndDispatch(
      { projectId: env.GEOPERA_PROJECT, jobTypeId: "test_cog", inputParams },
      { idempotencyKey: created.idempotencyKey },
    );
    assert.equal(replay.job.id, job.id);
    // The same key with other params is refused.
    await rejectsWith(
      client.jobs.createAndDispatch(
        { projectId: env.GEOPERA_PROJECT, jobTypeId: "test_cog", inputParams: { ...inputParams, steps: 5 } },
        { idempotencyKey: created.idempotencyKey },
      ),
      FailedPreconditionError,
      Code.FAILED_PRECONDITION,
      "IDEMPOTENCY_KEY_REUSED",
    );

    const watch = client.watchJob(job.id);
    const events = await collect(watch);
    assert.equal(events[0].eventType, "snapshot");
    assertContiguous(events);
    const last = events[events.length - 1];
    assert.equal(last.eventType, "succeeded");
    assert.equal(last.job?.status, JobStatus.SUCCEEDED);
    assert.ok(events.some((e) => e.job?.status === JobStatus.RUNNING), "a RUNNING event was streamed");
    assert.ok(last.eventTime && last.eventTime.seconds > 0n);
    assert.equal(last.job?.outputItemIds.length, 1);
    assert.equal(watch.lastSequence, last.sequence);
    assert.equal(watch.resumes, 0);

    const got = await client.jobs.get(job.id);
    assert.equal(got.status, JobStatus.SUCCEEDED);
    assert.equal(got.progress, 1);
    const output = await client.items.get(got.outputItemIds[0]);
    assert.deepEqual(output.sourceItemIds, [env.GEOPERA_ITEM_ID]);

    // Resuming after a sequence replays exactly the later events, without a snapshot.
    const middle = events[1];
    const resumed = await collect(client.watchJob(job.id, middle.sequence));
    assert.deepEqual(
      resumed.map((e) => [e.sequence, e.eventType]),
      events.slice(2).map((e) => [e.sequence, e.eventType]),
    );
    // Resuming at the end repeats nothing: the stream ends at once, and the watch with it.
    const ended = await collect(client.watchJob(job.id, last.sequence));
    assert.equal(ended.length, 0);
    assert.equal((await client.jobs.wait(job.id)).status, JobStatus.SUCCEEDED);
  });

  test("watchJob resumes after a dropped stream", async () => {
    const proxy = await DroppingProxy.start(env.GEOPERA_TARGET);
    const proxied = new GeoperaClient(proxy.target, env.GEOPERA_TOKEN, {
      retry: { initialBackoffMs: 50, maxBackoffMs: 500 },
    });
    try {
      const { job } = await client.jobs.createAndDispatch({
        projectId: env.GEOPERA_PROJECT,
        jobTypeId: "test_cog",
        inputParams: { name: `ts_resume_${randomUUID().slice(0, 8)}`, steps: 8, step_seconds: 0.2 },
      });
      const watch = proxied.watchJob(job.id, 0, { timeoutMs: 60_000 });
      const events: WatchJobResponse[] = [];
      let dropped = 0;
      for await (const event of watch) {
        events.push(event);
        if (events.length === 1) dropped = proxy.drop();
      }
      assert.ok(dropped > 0, "the proxy had a connection to cut");
      assert.ok(watch.resumes >= 1, "the watch was resumed");
      assert.equal(events[0].eventType, "snapshot");
      assertContiguous(events);
      assert.equal(events[events.length - 1].job?.status, JobStatus.SUCCEEDED);
    } finally {
      proxied.close();
      await proxy.close();
    }
  });

  test("analytics.execute zonal_stats: NDVI over a polygon", async () => {
    const result = await client.analytics.execute("zonal_stats", {
      item_id: env.GEOPERA_ITEM_ID,
      index_name: "NDVI",
      geometry: AOI,
    });
    assert.equal(result.operation, "zonal_stats");
    const zones = result.result?.["zones"] as { stats: Record<string, number | null> }[];
    const mean = zones[0].stats["mean"];
    assert.ok(typeof mean === "number" && mean > 0.3 && mean < 1, `NDVI mean ${mean} not in (0.3, 1)`);

    const typed = await client.analytics.zonalStats({
      item_id: env.GEOPERA_ITEM_ID,
      index_name: "NDVI",
      geometry: AOI,
      percentiles: [50],
    });
    assert.equal(typed.index_name, "NDVI");
    assert.equal(typed.zones.length, 1);
    assert.equal(typed.zones[0].stats.mean, mean);
    assert.ok((typed.zones[0].stats.count ?? 0) > 0);
    assert.equal(typed.zones[0].percentiles[0].percentile, 50);
  });

  test("errors are typed with code, reason, field violations and schema", async () => {
    const notFound = await rejectsWith(
      client.items.get("it_does_not_exist"),
      NotFoundError,
      Code.NOT_FOUND,
      "ITEM_NOT_FOUND",
    );
    assert.equal(notFound.domain, "geopera.v1");
    assert.match(notFound.requestId, /\S/);

    const invalid = await rejectsWith(
      client.analytics.execute("zonal_stats", { item_id: env.GEOPERA_ITEM_ID, index_name: "NOT_AN_INDEX" }),
      InvalidArgumentError,
      Code.INVALID_ARGUMENT,
      "INVALID_ANALYTICS_PARAMS",
    );
    const fields = invalid.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes("params.geometry"), `violations: ${fields.join(", ")}`);
    assert.ok(fields.includes("params.index_name"), `violations: ${fields.join(", ")}`);
    assert.equal(invalid.expectedSchema?.subject, "zonal_stats");
    assert.ok(invalid.expectedSchema?.jsonSchema["properties"], "the expected JSON Schema is attached");

    const bbox = await rejectsWith(
      client.items.list({ projectId: env.GEOPERA_PROJECT, bbox: [1, 2, 3] }),
      InvalidArgumentError,
      Code.INVALID_ARGUMENT,
      "INVALID_BBOX",
    );
    assert.ok(bbox.fieldViolations.some((v) => v.field.startsWith("bbox")));

    const anonymous = new GeoperaClient(env.GEOPERA_TARGET, "gpk_not_a_token");
    try {
      await rejectsWith(anonymous.jobs.get("job_x"), UnauthenticatedError, Code.UNAUTHENTICATED, "UNAUTHENTICATED");
    } finally {
      anonymous.close();
    }
  });
});
