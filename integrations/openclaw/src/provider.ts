/** The `omnillm-router` provider: OmniLLM's gateway as an `openai-completions` endpoint. */

import { createClient, type FetchLike } from "./client.js";
import { DEFAULT_GATEWAY_URL, normalizeBaseUrl, PLUGIN_ID, PROVIDER_ID, type OmniSettings } from "./config.js";

/** OmniLLM's routing aliases: what OpenClaw lists when the gateway cannot be asked. */
export const STATIC_MODEL_IDS = ["auto", "fast", "cheap", "smart", "free", "vision"] as const;

const ALIAS_NAMES: Record<string, string> = {
  auto: "OmniLLM Auto (router picks)",
  fast: "OmniLLM Fast",
  cheap: "OmniLLM Cheap",
  smart: "OmniLLM Smart",
  free: "OmniLLM Free",
  vision: "OmniLLM Vision",
};
const IMAGE_MODELS = new Set(["auto", "vision"]);
const CATALOG_TTL_MS = 60_000;

export interface ModelDefinition {
  id: string;
  name: string;
  api: "openai-completions";
  reasoning: boolean;
  input: ("text" | "image")[];
  cost: { input: number; output: number; cacheRead: number; cacheWrite: number };
  contextWindow: number;
  maxTokens: number;
  compat: { supportsUsageInStreaming: boolean };
}

export interface ProviderConfig {
  baseUrl: string;
  apiKey: string;
  api: "openai-completions";
  models: ModelDefinition[];
}

export function modelDefinition(id: string): ModelDefinition {
  return {
    id,
    name: ALIAS_NAMES[id] ?? `OmniLLM ${id}`,
    api: "openai-completions",
    reasoning: false,
    input: IMAGE_MODELS.has(id) ? ["text", "image"] : ["text"],
    // OmniLLM bills per upstream; its real spend is in `/omni cost` and `/omni stats`.
    cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
    contextWindow: 128_000,
    maxTokens: 8192,
    // The gateway sends the final usage chunk when asked.
    compat: { supportsUsageInStreaming: true },
  };
}

export function providerConfig(settings: OmniSettings, ids: readonly string[]): ProviderConfig {
  return {
    baseUrl: settings.baseUrl,
    // Older OpenClaw model registries want a non-empty key even for a keyless local proxy.
    apiKey: settings.apiKey ?? "omnillm-local",
    api: "openai-completions",
    models: ids.map(modelDefinition),
  };
}

/** Ids from `GET /v1/models` (OpenAI's `{data: [{id}]}`); the static aliases when that fails. */
export async function fetchModelIds(settings: OmniSettings, fetchImpl?: FetchLike): Promise<{ ids: string[]; live: boolean }> {
  try {
    const body = await createClient(settings, fetchImpl).get<{ data?: { id?: unknown }[] }>("/v1/models");
    const ids = [...new Set((body?.data ?? []).map((m) => m?.id).filter((id): id is string => typeof id === "string" && id !== ""))];
    if (ids.length > 0) return { ids, live: true };
  } catch {
    // fall through to the static aliases
  }
  return { ids: [...STATIC_MODEL_IDS], live: false };
}

interface Prompter {
  text(opts: { message: string; initialValue?: string; placeholder?: string }): Promise<string | symbol | undefined>;
}

export function createProvider(getSettings: () => OmniSettings, fetchImpl?: FetchLike) {
  let cache: { at: number; baseUrl: string; ids: string[] } | undefined;

  async function liveIds(settings: OmniSettings): Promise<string[]> {
    const now = Date.now();
    if (cache && cache.baseUrl === settings.baseUrl && now - cache.at < CATALOG_TTL_MS) return cache.ids;
    const { ids, live } = await fetchModelIds(settings, fetchImpl);
    if (live) cache = { at: now, baseUrl: settings.baseUrl, ids };
    return ids;
  }

  return {
    id: PROVIDER_ID,
    label: "OmniLLM Router",
    docsPath: "/providers/models",
    envVars: ["OMNILLM_API_KEY"],
    auth: [
      {
        id: "local",
        label: "Local OmniLLM gateway",
        hint: `OpenAI-compatible gateway, default ${DEFAULT_GATEWAY_URL}`,
        kind: "custom" as const,
        async run(ctx: { prompter?: Prompter }) {
          const current = getSettings();
          const answer = ctx?.prompter
            ? await ctx.prompter.text({ message: "OmniLLM gateway URL", initialValue: current.baseUrl })
            : undefined;
          const baseUrl = normalizeBaseUrl(typeof answer === "string" && answer.trim() ? answer : current.baseUrl);
          const settings = { ...current, baseUrl };
          const ids = await liveIds(settings);
          return {
            profiles: [
              {
                profileId: `${PROVIDER_ID}:local`,
                credential: { type: "token", provider: PROVIDER_ID, token: settings.apiKey ?? "omnillm-local" },
              },
            ],
            configPatch: {
              models: { providers: { [PROVIDER_ID]: providerConfig(settings, ids) } },
              agents: { defaults: { models: Object.fromEntries(ids.map((id) => [`${PROVIDER_ID}/${id}`, {}])) } },
              plugins: { entries: { [PLUGIN_ID]: { config: { gatewayUrl: baseUrl } } } },
            },
            defaultModel: `${PROVIDER_ID}/auto`,
            notes: [
              `OmniLLM serves /v1/chat/completions at ${baseUrl}; start it with \`omni up\`.`,
              "Try `/omni providers` to see which upstream providers are live.",
            ],
          };
        },
      },
    ],
    /** Live catalog: the gateway's `/v1/models`, or the static aliases when it is down. */
    catalog: {
      order: "simple" as const,
      run: async () => {
        const settings = getSettings();
        return { provider: providerConfig(settings, await liveIds(settings)) };
      },
    },
    /** Offline rows: the routing aliases, no network. */
    staticCatalog: {
      order: "simple" as const,
      run: async () => ({ provider: providerConfig(getSettings(), STATIC_MODEL_IDS) }),
    },
    /** OmniLLM accepts any id it knows (aliases, `provider/model`): pass unknown ids through. */
    resolveDynamicModel: (ctx: { modelId: string }) => ({
      ...modelDefinition(ctx.modelId),
      provider: PROVIDER_ID,
      baseUrl: getSettings().baseUrl,
    }),
  };
}
