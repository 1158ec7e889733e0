// Typed params and results of the built-in analytics methods. The wire carries
// them as `google.protobuf.Struct` (JSON objects, snake_case keys exactly as
// the method's published JSON Schema names them); these interfaces only add
// static types. Other methods go through `client.analytics.execute`.

import type { JsonObject } from "@bufbuild/protobuf";

export type Position = [number, number] | [number, number, number];

export interface Polygon {
  type: "Polygon";
  coordinates: Position[][];
}

export interface MultiPolygon {
  type: "MultiPolygon";
  coordinates: Position[][][];
}

export interface Feature {
  type: "Feature";
  geometry: Polygon | MultiPolygon;
  properties?: JsonObject | null;
  id?: string | number;
}

export interface FeatureCollection {
  type: "FeatureCollection";
  features: Feature[];
}

/** A GeoJSON (RFC 7946, lon/lat WGS 84) area: the zones of an analytics call. */
export type GeoJSONArea = Polygon | MultiPolygon | Feature | FeatureCollection;

export type StatName = "count" | "nodata_count" | "min" | "max" | "mean" | "std" | "sum" | "median";

/** Params of `zonal_stats`: exactly one of `band` and `index_name`. */
export interface ZonalStatsParams {
  item_id: string;
  /** Default: the asset with role `data`, else the only one. */
  asset_key?: string;
  /** 1-based band (exclusive with `index_name`). */
  band?: number;
  /** Spectral index, e.g. `NDVI` (case-insensitive). */
  index_name?: string;
  /** With `band`: apply the band's scale/offset. */
  apply_scale?: boolean;
  geometry: GeoJSONArea;
  /** Default: count, nodata_count, min, max, mean, std. */
  stats?: StatName[];
  percentiles?: number[];
  histogram?: { bins?: number; range?: [number, number] };
  /** `center` (rasterstats rule, default) or `exact` (coverage-weighted). */
  coverage?: "center" | "exact";
  all_touched?: boolean;
  /** Common name -> 1-based band index or band name, e.g. `{"RED": 3, "nir": "B08"}`. */
  band_mapping?: Record<string, number | string>;
}

export interface ZoneStatistics {
  /** Position of the zone in the input (features in order). */
  index: number;
  feature_id?: string | number | null;
  properties: JsonObject;
  /** The requested statistics; null when the zone has no valid pixel. */
  stats: Partial<Record<StatName, number | null>>;
  percentiles: { percentile: number; value: number | null }[];
  histogram?: { edges: number[]; counts: number[] } | null;
  pixels_read: number;
}

export interface ZonalStatsResult {
  item_id: string;
  asset_key: string;
  band: number | null;
  index_name: string | null;
  /** Common name -> band index read for the index. */
  bands_used: Record<string, number>;
  unit: string | null;
  coverage: "center" | "exact";
  all_touched: boolean;
  crs: string;
  /** Pixel size used (always full resolution), CRS units. */
  resolution: { x: number; y: number };
  pixels_read: number;
  zones: ZoneStatistics[];
}
