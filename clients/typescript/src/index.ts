// Public API of the Geopera TypeScript client.

export * from "./assets.js";
export * from "./client.js";
export * from "./errors.js";
export * from "./jobs_watch.js";
export * from "./jsonview.js";
export * from "./operations.js";
export * from "./webhooks.js";
export type * from "./analytics.js";
export { registry, generatedFiles } from "./gen/index.js";

// Generated messages, enums and schemas (geopera.v1, google.rpc).
export * from "./gen/geopera/v1/analytics_pb.js";
export * from "./gen/geopera/v1/auth_pb.js";
export * from "./gen/geopera/v1/catalog_pb.js";
export * from "./gen/geopera/v1/credits_pb.js";
export * from "./gen/geopera/v1/errors_pb.js";
export * from "./gen/geopera/v1/kernel_pb.js";
export * from "./gen/geopera/v1/processing_pb.js";
export * from "./gen/geopera/v1/resources_pb.js";
export * from "./gen/geopera/v1/webhooks_pb.js";
export * from "./gen/geopera/v1/worker_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
