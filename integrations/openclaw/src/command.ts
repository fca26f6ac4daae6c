/** `/omni`: the router's admin routes as chat commands, answered in markdown. */

import { GatewayError, type GatewayClient } from "./client.js";
import {
  renderCost,
  renderModels,
  renderProviders,
  renderStats,
  renderSwitch,
  rowsOf,
  type Stats,
} from "./render.js";

export interface CommandContext {
  args?: string | string[];
  commandBody?: string;
  [key: string]: unknown;
}

export interface CommandReply {
  text: string;
  isError?: boolean;
}

export interface CommandDefinition {
  name: string;
  description: string;
  acceptsArgs: boolean;
  requireAuth: boolean;
  handler(ctx: CommandContext): Promise<CommandReply>;
}

export const COST_GROUPS = ["provider", "model", "day", "key", "tier"] as const;

export const ADMIN_ROUTES = {
  providers: "/v1/admin/providers",
  models: "/v1/admin/models",
  cost: "/v1/admin/cost",
  stats: "/v1/admin/stats",
  switch: "/v1/admin/switch",
} as const;

export const HELP = [
  "**/omni**: the OmniLLM router",
  "",
  "| command | what it shows |",
  "| --- | --- |",
  "| `/omni models` | the models OmniLLM serves, with prices |",
  "| `/omni providers` | each provider's state, circuit breaker, latency and error rate |",
  "| `/omni cost [provider\\|model\\|day\\|key\\|tier]` | spend broken down (default: by provider) |",
  "| `/omni stats` | requests, fallbacks, latency, tokens, cost and savings |",
  "| `/omni switch <provider>` | prefer a provider for every request that does not pin a model |",
  "| `/omni switch --clear` | stop preferring a provider |",
  "| `/omni switch` | show the current preference |",
].join("\n");

/** The words after `/omni`, from `ctx.args` (string or list) or else from the command body. */
export function argsOf(ctx: CommandContext | undefined): string[] {
  let raw: string | string[] | undefined = ctx?.args;
  if (raw === undefined && typeof ctx?.commandBody === "string") {
    raw = ctx.commandBody.replace(/^\s*\/?omni\b/i, "");
  }
  if (Array.isArray(raw)) raw = raw.join(" ");
  return (raw ?? "").trim().split(/\s+/).filter(Boolean);
}

type SwitchReply = { provider?: string | null; at?: number | null; code?: string; message?: string };

async function run(client: GatewayClient, words: string[]): Promise<CommandReply> {
  const [sub = "help", ...rest] = words;
  switch (sub.toLowerCase()) {
    case "help":
    case "-h":
    case "--help":
      return { text: HELP };
    case "models":
      return { text: renderModels(rowsOf.models(await client.get(ADMIN_ROUTES.models))) };
    case "providers":
    case "status":
      return { text: renderProviders(rowsOf.providers(await client.get(ADMIN_ROUTES.providers))) };
    case "cost": {
      const by = (rest[0] ?? "provider").toLowerCase();
      if (!(COST_GROUPS as readonly string[]).includes(by)) {
        return { text: `Unknown grouping \`${by}\`: use one of ${COST_GROUPS.map((g) => `\`${g}\``).join(", ")}.`, isError: true };
      }
      const rows = rowsOf.cost(await client.get(`${ADMIN_ROUTES.cost}?by=${encodeURIComponent(by)}`));
      return { text: renderCost(rows, by) };
    }
    case "stats":
      return { text: renderStats(await client.get<Stats>(ADMIN_ROUTES.stats)) };
    case "switch": {
      const clear = rest.includes("--clear") || rest.includes("-c");
      const names = rest.filter((w) => !w.startsWith("-"));
      if (clear && names.length > 0) {
        return { text: "Give either a provider or `--clear`, not both.", isError: true };
      }
      if (names.length > 1) return { text: "Usage: `/omni switch <provider>` or `/omni switch --clear`.", isError: true };
      const body = clear ? { clear: true } : names[0] ? { provider: names[0] } : {};
      let reply: SwitchReply;
      try {
        reply = await client.post<SwitchReply>(ADMIN_ROUTES.switch, body);
      } catch (err) {
        // An error status with OmniLLM's {code, message} body is a refusal, not an outage.
        if (err instanceof GatewayError && err.kind === "http" && err.code && err.status !== 401 && err.status !== 403) {
          return { text: `❌ Switch refused: ${err.detail ?? err.message} (\`${err.code}\`)`, isError: true };
        }
        throw err;
      }
      if (reply && typeof reply === "object" && typeof reply.code === "string") {
        return { text: `❌ Switch refused: ${reply.message ?? "no reason given"} (\`${reply.code}\`)`, isError: true };
      }
      if (!clear && !names[0]) {
        return {
          text: reply?.provider
            ? `OmniLLM prefers \`${reply.provider}\`. Clear it with \`/omni switch --clear\`.`
            : "No provider preference: OmniLLM routes by strategy. Set one with `/omni switch <provider>`.",
        };
      }
      return { text: renderSwitch(reply ?? {}) };
    }
    default:
      return { text: `Unknown subcommand \`${sub}\`.\n\n${HELP}`, isError: true };
  }
}

export function createOmniCommand(getClient: () => GatewayClient): CommandDefinition {
  return {
    name: "omni",
    description: "OmniLLM router: models, providers, cost, stats, switch <provider>",
    acceptsArgs: true,
    requireAuth: true,
    async handler(ctx) {
      try {
        return await run(getClient(), argsOf(ctx));
      } catch (err) {
        if (err instanceof GatewayError) return { text: `⚠️ ${err.message}`, isError: true };
        if (err instanceof TypeError) {
          return { text: `⚠️ OmniLLM gateway gave an answer of an unexpected shape (${err.message}).`, isError: true };
        }
        throw err;
      }
    },
  };
}
