// End-to-end tests against a LIVE Geopera server with a worker that runs the
// built-in `clip` job type: `make serve` is such a server, so is the one
// tests/test_typescript_client.py starts. The server comes from the environment:
//
//   GEOPERA_TARGET    host:port of the gRPC server
//   GEOPERA_TOKEN     a user token with the default scopes on GEOPERA_PROJECT
//   GEOPERA_PROJECT   the project to create jobs in (`demo` with `make serve`)
//   GEOPERA_ITEM_ID   optional: the s2l1c_slovenia_20150711_bgrn sample item
//                     (B, G, R, NIR); looked up by name in the project when unset
//
// Against `make serve`:
//
//   GEOPERA_TARGET=127.0.0.1:50051 GEOPERA_TOKEN=$(cat ../../var/demo-token) GEOPERA_PROJECT=demo npm test
//
// A missing variable fails every test: this suite never skips silently.

import assert from "node:assert/strict";
import { createHash, createHmac, randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { create, type JsonObject } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";

import {
  Code,
  CreditsBalanceGetParamsSchema,
  DataLossError,
  FailedPreconditionError,
  GeoperaClient,
  InvalidArgumentError,
  isTerminal,
  ItemView,
  JobSchema,
  JobStatus,
  NotFoundError,
  toJsonView,
  UnauthenticatedError,
  GeoperaError,
  type GeoJSONArea,
  type Item,
  type WatchJobResponse,
} from "../src/index.js";

const REQUIRED = ["GEOPERA_TARGET", "GEOPERA_TOKEN", "GEOPERA_PROJECT"] as const;
const missing = REQUIRED.filter((name) => !process.env[name]);
const env = Object.fromEntries(
  [...REQUIRED, "GEOPERA_ITEM_ID"].map((name) => [name, process.env[name] ?? ""]),
) as Record<(typeof REQUIRED)[number] | "GEOPERA_ITEM_ID", string>;
const SAMPLE_ITEM = "s2l1c_slovenia_20150711_bgrn";
const STACK_ITEM = "s2l1c_slovenia_ndvi_68dates"; // 2.7 MB: a download of three 1 MiB chunks

async function findItem(client: GeoperaClient, name: string): Promise<Item> {
  for await (const item of client.items.iterate({ projectId: env.GEOPERA_PROJECT, pageSize: 100 })) {
    if (item.name === name) return client.items.get(item.id);
  }
  assert.fail(`project ${env.GEOPERA_PROJECT} has no item ${name}`);
}

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
  /** Cut every connection once this many more bytes came back from the server. */
  cutAfterBytes: number | undefined;
  /** Connections cut by `cutAfterBytes`. */
  cuts = 0;
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
      upstream.on("data", (chunk: Buffer) => {
        if (proxy.cutAfterBytes === undefined) return;
        proxy.cutAfterBytes -= chunk.length;
        if (proxy.cutAfterBytes <= 0) {
          proxy.cutAfterBytes = undefined;
          proxy.cuts += proxy.drop();
        }
      });
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

  before(async () => {
    if (env.GEOPERA_ITEM_ID || missing.length) return;
    for await (const item of client.items.iterate({ projectId: env.GEOPERA_PROJECT, pageSize: 100 })) {
      if (item.name === SAMPLE_ITEM) env.GEOPERA_ITEM_ID = item.id;
    }
    assert.ok(env.GEOPERA_ITEM_ID, `project ${env.GEOPERA_PROJECT} has no item ${SAMPLE_ITEM}`);
  });

  after(() => client?.close());

  test("webhooks: create, test (a signed POST to a local receiver), deliveries, delete", async () => {
    const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];
    const receiver = http.createServer((request, response) => {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        received.push({ headers: request.headers, body });
        response.end("ok");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = receiver.address() as net.AddressInfo;
      const created = await client.webhooks.create("demo", `http://127.0.0.1:${port}/hook`);
      assert.ok(created.secret.startsWith("whsec_"));
      assert.deepEqual(created.webhook!.eventTypes, ["job.succeeded", "job.failed", "job.cancelled"]);
      assert.ok((await client.webhooks.list("demo")).some((hook) => hook.id === created.webhook!.id));
      const messageId = await client.webhooks.test(created.webhook!.id);
      for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      const [message] = received;
      assert.ok(message, "no webhook request arrived");
      assert.equal(message.headers["webhook-id"], messageId);
      // Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body"> keyed by the decoded secret.
      const key = Buffer.from(created.secret.slice("whsec_".length), "base64");
      const signed = `${messageId}.${message.headers["webhook-timestamp"]}.${message.body}`;
      const expected = "v1," + createHmac("sha256", key).update(signed).digest("base64");
      assert.equal(message.headers["webhook-signature"], expected);
      assert.equal(JSON.parse(message.body).type, "webhook.test");
      let attempts = await client.webhooks.deliveries(created.webhook!.id);
      for (let i = 0; i < 50 && attempts.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        attempts = await client.webhooks.deliveries(created.webhook!.id);
      }
      assert.equal(attempts[0]?.statusCode, 200);
      assert.equal((await client.webhooks.delete(created.webhook!.id)).id, created.webhook!.id);
      await rejectsWith(client.webhooks.test(created.webhook!.id), NotFoundError, Code.NOT_FOUND, "WEBHOOK_NOT_FOUND");
    } finally {
      receiver.close();
    }
  });

  test("items.get and items.list return typed items", async () => {
    const item = await client.items.get(env.GEOPERA_ITEM_ID);
    assert.equal(item.id, env.GEOPERA_ITEM_ID);
    assert.equal(item.projectId, env.GEOPERA_PROJECT);
    assert.equal(item.name, SAMPLE_ITEM);
    assert.ok(item.assets["data"], "the item has a data asset");
    assert.equal(item.assets["data"].bands.length, 4);
    assert.equal(item.geometry?.["type"], "Polygon");

    const page = await client.items.list({ projectId: env.GEOPERA_PROJECT, pageSize: 1, intersects: AOI as never });
    assert.equal(page.$typeName, "geopera.v1.ItemsListResult");
    assert.equal(page.items.length, 1);
    // Lists are lean (ITEM_VIEW_BASIC) unless the full view is asked for.
    assert.equal(page.items[0].geometry, undefined);
    assert.deepEqual(Object.keys(page.items[0].assets), Object.keys(item.assets));
    assert.equal(page.items[0].assets["data"]?.bands.length, 0);
    const full = await client.items.list({ projectId: env.GEOPERA_PROJECT, pageSize: 1, intersects: AOI as never, view: ItemView.FULL });
    assert.equal(full.items[0].geometry?.["type"], "Polygon");
    assert.equal(full.items[0].assets["data"]?.bands.length, 4);
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

  test("createBatch prices and runs a batch, watchMany follows it, resubmit runs a job again", async () => {
    const requests = [1, 2].map((n) => ({
      jobTypeId: "clip",
      inputParams: {
        source_item_id: env.GEOPERA_ITEM_ID,
        aoi_geometry: AOI as unknown as JsonObject,
        output_name: `ts_batch_${n}_${randomUUID().slice(0, 8)}`,
      },
    }));
    const priced = await client.jobs.createBatch(
      { projectId: env.GEOPERA_PROJECT, requests, allOrNothing: true },
      { validateOnly: true },
    );
    assert.equal(priced.createdCount, 2);
    assert.deepEqual(priced.jobs.map((job) => job.id), ["", ""]);
    assert.deepEqual(priced.errors.map((error) => error.reason), ["", ""]);
    assert.ok(priced.creditsReserved >= 2n);
    await rejectsWith(client.jobs.resubmit("job_missing"), NotFoundError, Code.NOT_FOUND, "JOB_NOT_FOUND");

    // For real, dispatched, then followed on one WatchJobs stream to the end.
    const batch = await client.jobs.createBatch({ projectId: env.GEOPERA_PROJECT, requests, dispatch: true });
    assert.match(batch.batchId, /^batch_/);
    const ended = new Map<string, JobStatus | undefined>();
    const watch = client.jobs.watchMany({ batchId: batch.batchId });
    for await (const event of watch) {
      assert.equal(event.job?.batchId, batch.batchId);
      if (isTerminal(event.job?.status)) ended.set(event.job!.id, event.job?.status);
    }
    assert.deepEqual([...ended.values()], [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]);
    assert.equal(watch.afterSequences.size, 2);
    const again = await client.jobs.resubmit(batch.jobs[0].id, { output_name: `ts_again_${randomUUID().slice(0, 8)}` });
    assert.equal(again.job.resubmittedFrom, batch.jobs[0].id);
    assert.equal((await client.jobs.wait(again.job.id)).status, JobStatus.SUCCEEDED);
  });

  test("create_and_dispatch runs clip to SUCCEEDED and WatchJob streams it", async () => {
    const inputParams = {
      source_item_id: env.GEOPERA_ITEM_ID,
      aoi_geometry: AOI as unknown as JsonObject,
      output_name: `ts_client_${randomUUID().slice(0, 8)}`,
    };
    // Priced first (validate_only): no job, no key, the hold the real call then takes.
    const priced = await client.jobs.createAndDispatch(
      { projectId: env.GEOPERA_PROJECT, jobTypeId: "clip", inputParams },
      { validateOnly: true },
    );
    assert.equal(priced.job.id, "");
    assert.ok((priced.estimate?.totalCredits ?? 0n) >= 1n);
    const created = await client.jobs.createAndDispatch({
      projectId: env.GEOPERA_PROJECT,
      jobTypeId: "clip",
      inputParams,
    });
    assert.equal(created.estimate?.totalCredits, priced.estimate?.totalCredits);
    assert.equal(created.job.creditsReserved, priced.estimate?.totalCredits);
    const job = created.job;
    assert.match(created.idempotencyKey, /^[0-9a-f-]{36}$/, "a key is generated by default");
    assert.match(job.id, /^job_/);
    assert.equal(job.jobTypeId, "clip");
    assert.equal(job.status, JobStatus.DISPATCHED);
    assert.equal(toJsonView(JobSchema, job)["status"], "dispatched"); // as the HTTP projection answers
    assert.equal(created.dispatch?.accepted, true);

    // The same key and params replay the first response: no second job.
    const replay = await client.jobs.createAndDispatch(
      { projectId: env.GEOPERA_PROJECT, jobTypeId: "clip", inputParams },
      { idempotencyKey: created.idempotencyKey },
    );
    assert.equal(replay.job.id, job.id);
    // The same key with other params is refused.
    await rejectsWith(
      client.jobs.createAndDispatch(
        { projectId: env.GEOPERA_PROJECT, jobTypeId: "clip", inputParams: { ...inputParams, output_name: "other" } },
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
    const logged: bigint[] = [];
    for await (const entry of client.jobs.logs(job.id, { pageSize: 1 })) logged.push(entry.sequence);
    assert.deepEqual(logged, logged.map((_, i) => BigInt(i + 1)), "the job's log records, in order");
    assert.equal(toJsonView(JobSchema, got)["status"], "succeeded");
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
        jobTypeId: "clip",
        inputParams: {
          source_item_id: env.GEOPERA_ITEM_ID,
          aoi_geometry: AOI as unknown as JsonObject,
          output_name: `ts_resume_${randomUUID().slice(0, 8)}`,
        },
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
    // Keys in the order of the method's output schema, whatever order the Struct arrived in.
    const schema = await client.analytics.outputSchema("zonal_stats");
    assert.deepEqual(Object.keys(typed), (schema?.["propertyOrdering"] as string[]).filter((k) => k in typed));
    assert.equal(JSON.stringify(typed.pixels_read), String(Math.round(typed.pixels_read)));
  });

  test("analytics.submit runs the method as a job whose result artifact is the synchronous answer", async () => {
    const params = { item_id: env.GEOPERA_ITEM_ID, index_name: "NDVI", geometry: AOI };
    const job = await client.analytics.submit("zonal_stats", params, env.GEOPERA_PROJECT!);
    assert.equal(job.jobTypeId, "analytics");
    const done = await client.jobs.wait(job.id);
    assert.equal(done.status, JobStatus.SUCCEEDED);
    assert.equal(done.creditsReserved, 0n);
    const resultArtifact = done.outputArtifacts[0];
    assert.equal(resultArtifact.key, "result");
    const got = await client.assets.download(resultArtifact.href);
    const answer = JSON.parse(Buffer.from(got.data).toString("utf8"));
    const synchronous = await client.analytics.execute("zonal_stats", params);
    assert.deepEqual(answer.result, synchronous.result);
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

  test("assets.download and downloadToFile: the stored bytes, verified; a dropped stream resumes; assets.sign", async () => {
    const asset = (await client.items.get(env.GEOPERA_ITEM_ID)).assets["data"]!;
    const seen: number[] = [];
    const got = await client.assets.download(asset, { onProgress: (received) => seen.push(received) });
    assert.equal(got.resourceName, asset.href);
    assert.equal(got.sha256, asset.sha256);
    assert.equal(createHash("sha256").update(got.data).digest("hex"), asset.sha256);
    assert.equal(BigInt(got.sizeBytes), asset.sizeBytes);
    assert.equal(got.data.length, got.sizeBytes);
    assert.equal(got.mediaType, asset.mediaType);
    assert.equal(seen[seen.length - 1], got.sizeBytes);

    const folder = await mkdtemp(join(tmpdir(), "geopera-ts-"));
    try {
      const path = join(folder, "scene.tif");
      const written = await client.assets.downloadToFile(asset.href, path);
      assert.equal(written.path, path);
      assert.deepEqual(await readFile(path), got.data);
      assert.deepEqual(await readdir(folder), ["scene.tif"]);

      // A wrong expected checksum: DATA_LOSS, and no file (nor .part) is left.
      const bad = join(folder, "bad.tif");
      await rejectsWith(
        client.assets.downloadToFile({ href: asset.href, sha256: "0".repeat(64) }, bad),
        DataLossError,
        Code.DATA_LOSS,
        "CHECKSUM_MISMATCH",
      );
      assert.deepEqual(await readdir(folder), ["scene.tif"]);

      // Cut the connection midway through a 2.7 MB asset: the download resumes at the bytes received.
      const stack = await findItem(client, STACK_ITEM);
      const large = stack.assets["data"]!;
      const proxy = await DroppingProxy.start(env.GEOPERA_TARGET);
      const proxied = new GeoperaClient(proxy.target, env.GEOPERA_TOKEN, { retry: { initialBackoffMs: 50, maxBackoffMs: 500 } });
      try {
        proxy.cutAfterBytes = 1_300_000;
        const resumed = await proxied.assets.downloadToFile(large, join(folder, "stack.tif"));
        assert.ok(proxy.cuts > 0, "the proxy cut the connection");
        assert.ok(resumed.resumes >= 1, "the download was resumed");
        assert.equal(resumed.sha256, large.sha256);
        const bytes = await readFile(join(folder, "stack.tif"));
        assert.equal(BigInt(bytes.length), large.sizeBytes);
        assert.equal(createHash("sha256").update(bytes).digest("hex"), large.sha256);
      } finally {
        proxied.close();
        await proxy.close();
      }
    } finally {
      await rm(folder, { recursive: true, force: true });
    }

    // assets.sign: an absolute URL of the HTTP download route, signed, expiring as asked.
    const signed = await client.assets.sign(asset, { ttlSeconds: 600 });
    const url = new URL(signed.url);
    assert.equal(url.pathname, `/v1/${asset.href}`);
    assert.ok(url.searchParams.get("signature"), signed.url);
    assert.equal(Number(url.searchParams.get("expires")), signed.expireTime.getTime() / 1000);
    assert.ok(Math.abs(signed.expireTime.getTime() - (Date.now() + 600_000)) < 10_000, String(signed.expireTime));
    // Anyone can open it with no header: the whole asset, or a Range of it.
    const whole = await fetch(signed.url);
    assert.equal(whole.status, 200);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), got.data);
    const part = await fetch(signed.url, { headers: { Range: "bytes=100-199" } });
    assert.equal(part.status, 206);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), got.data.subarray(100, 200));
    const byDefault = await client.assets.sign(asset.href);
    assert.ok(Math.abs(byDefault.expireTime.getTime() - (Date.now() + 3_600_000)) < 10_000);
    await rejectsWith(
      client.assets.sign(asset, { ttlSeconds: -1 }),
      InvalidArgumentError,
      Code.INVALID_ARGUMENT,
      "INVALID_TTL",
    );
    await rejectsWith(
      client.assets.sign(`items/${env.GEOPERA_ITEM_ID}/assets/nope`),
      NotFoundError,
      Code.NOT_FOUND,
      "ASSET_NOT_FOUND",
    );

    await rejectsWith(
      client.assets.download(`items/${env.GEOPERA_ITEM_ID}/assets/nope`),
      NotFoundError,
      Code.NOT_FOUND,
      "ASSET_NOT_FOUND",
    );
    const anonymous = new GeoperaClient(env.GEOPERA_TARGET, "gpk_not_a_token");
    try {
      await rejectsWith(anonymous.assets.download(asset), UnauthenticatedError, Code.UNAUTHENTICATED, "UNAUTHENTICATED");
    } finally {
      anonymous.close();
    }
  });
});
