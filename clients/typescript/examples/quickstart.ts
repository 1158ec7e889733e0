// A first program against `make serve` (see ../README.md). From clients/typescript:
//
//   npm ci
//   GEOPERA_TOKEN=$(cat ../../var/demo-token) npm run example
//
// GEOPERA_TARGET (default 127.0.0.1:50051) and GEOPERA_PROJECT (default `demo`)
// point it elsewhere. In your own code, import from "@geopera/client".

import { GeoperaClient, JobSchema, toJsonView, type GeoJSONArea } from "../src/index.js";

const token = process.env.GEOPERA_TOKEN;
if (!token) throw new Error("set GEOPERA_TOKEN (make serve prints it and writes var/demo-token)");
const projectId = process.env.GEOPERA_PROJECT || "demo";
const client = new GeoperaClient(process.env.GEOPERA_TARGET || "127.0.0.1:50051", token);

const aoi: GeoJSONArea = {
  type: "Polygon",
  coordinates: [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872], [14.555, 45.872], [14.555, 45.868]]],
};

try {
  // Lists are lean: ids, names, dates, bboxes and asset keys (ask `view: ItemView.FULL` for more).
  const page = await client.items.list({ projectId, collectionId: "s2_slovenia", intersects: aoi as never });
  for (const item of page.items) console.log(item.id, item.name, Object.keys(item.assets).join(","));
  const item = page.items[0];

  const stats = await client.analytics.zonalStats({ item_id: item.id, index_name: "NDVI", geometry: aoi });
  console.log("NDVI mean", stats.zones[0].stats.mean?.toFixed(3), "over", stats.pixels_read, "pixels");

  const { job } = await client.jobs.createAndDispatch({
    projectId,
    jobTypeId: "clip",
    inputParams: { source_item_id: item.id, aoi_geometry: aoi as never, output_name: "ts_example_clip" },
  });
  const final = await client.jobs.wait(job.id, { timeoutMs: 120_000 });
  // The JSON view is what the HTTP projection answers: statuses as words ("succeeded").
  const view = toJsonView(JobSchema, final);
  console.log(view["id"], view["status"], final.outputItemIds.join(","));
} finally {
  client.close();
}
