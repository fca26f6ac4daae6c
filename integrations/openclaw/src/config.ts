/** Plugin settings: `plugins.entries.omnillm-router.config`, then the environment, then defaults. */

export const PLUGIN_ID = "omnillm-router";
export const PROVIDER_ID = "omnillm-router";
export const DEFAULT_GATEWAY_URL = "http://127.0.0.1:4000/v1";
export const DEFAULT_TIMEOUT_MS = 5000;

export interface OmniSettings {
  /** The gateway's OpenAI base URL, always ending in `/v1`, no trailing slash. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey?: string;
  timeoutMs: number;
}

type Env = Record<string, string | undefined>;

/** `http://h:4000`, `http://h:4000/`, `http://h:4000/v1/` all become `http://h:4000/v1`. */
export function normalizeBaseUrl(raw: string): string {
  let url = raw.trim().replace(/\/+$/, "");
  if (!/^https?:\/\//i.test(url)) url = `http://${url}`;
  if (!/\/v1$/.test(url)) url = `${url}/v1`;
  return url;
}

function str(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

/**
 * Settings from the plugin config. `register()` may first be called with an empty
 * `pluginConfig`, so every field falls back to the environment and then to a default.
 */
export function resolveSettings(pluginConfig: unknown, env: Env = process.env): OmniSettings {
  const cfg = (pluginConfig && typeof pluginConfig === "object" ? pluginConfig : {}) as Record<string, unknown>;
  const gateway = str(cfg.gatewayUrl) ?? str(env.OMNILLM_GATEWAY_URL) ?? DEFAULT_GATEWAY_URL;
  const apiKey = str(cfg.apiKey) ?? str(env.OMNILLM_API_KEY);
  const timeout = typeof cfg.timeoutMs === "number" && cfg.timeoutMs >= 100 ? cfg.timeoutMs : DEFAULT_TIMEOUT_MS;
  return { baseUrl: normalizeBaseUrl(gateway), ...(apiKey ? { apiKey } : {}), timeoutMs: timeout };
}
