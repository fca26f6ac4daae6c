/**
 * OpenClaw plugin `omnillm-router`: the OmniLLM gateway as a model provider, plus `/omni`.
 *
 * No dependency on the OpenClaw SDK: the entry is the plain `{ id, name, description,
 * configSchema, register(api) }` object that `definePluginEntry` also produces, and the
 * API object is used only through `registerProvider`, `registerCommand`, `pluginConfig`
 * and `logger`.
 */

import { createClient, type FetchLike } from "./client.js";
import { createOmniCommand } from "./command.js";
import { PLUGIN_ID, resolveSettings } from "./config.js";
import { createProvider } from "./provider.js";

export { ADMIN_ROUTES, argsOf, createOmniCommand, HELP } from "./command.js";
export { createClient, GatewayError } from "./client.js";
export { DEFAULT_GATEWAY_URL, normalizeBaseUrl, PLUGIN_ID, PROVIDER_ID, resolveSettings } from "./config.js";
export { createProvider, fetchModelIds, modelDefinition, STATIC_MODEL_IDS } from "./provider.js";
export * from "./render.js";

/** The slice of `OpenClawPluginApi` this plugin uses. */
export interface PluginApi {
  pluginConfig?: unknown;
  logger?: { info?: (msg: string) => void; warn?: (msg: string) => void; debug?: (msg: string) => void };
  registerProvider?: (provider: unknown) => void;
  registerCommand?: (command: unknown) => void;
}

export const configSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    gatewayUrl: { type: "string" },
    apiKey: { type: "string" },
    timeoutMs: { type: "integer", minimum: 100 },
  },
} as const;

export interface PluginOptions {
  /** Replaces the global `fetch` (tests). */
  fetch?: FetchLike;
  env?: Record<string, string | undefined>;
}

export function createPlugin(options: PluginOptions = {}) {
  return {
    id: PLUGIN_ID,
    name: "OmniLLM Router",
    description: "OmniLLM router as an OpenClaw provider, with the /omni admin command",
    configSchema,
    register(api: PluginApi) {
      // register() can run several times, the first time with an empty pluginConfig:
      // settings are read from this call's api each time they are needed, nothing global.
      const settings = () => resolveSettings(api.pluginConfig, options.env ?? process.env);
      if (typeof api.registerProvider === "function") {
        api.registerProvider(createProvider(settings, options.fetch));
      } else {
        api.logger?.warn?.("omnillm-router: this OpenClaw has no registerProvider; configure models.providers by hand");
      }
      if (typeof api.registerCommand === "function") {
        api.registerCommand(createOmniCommand(() => createClient(settings(), options.fetch ?? globalThis.fetch)));
      }
      api.logger?.debug?.(`omnillm-router: gateway ${settings().baseUrl}`);
    },
  };
}

const plugin = createPlugin();
export default plugin;
