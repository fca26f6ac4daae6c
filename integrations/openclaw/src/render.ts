/** Markdown for the gateway's admin answers (the Python CLI's `--json` shapes). */

export interface ProviderRow {
  name: string;
  family: string;
  state: string;
  circuit?: string;
  ttft_ms?: number | null;
  error_rate?: number | null;
  models: number;
  base_url?: string | null;
  reason?: string | null;
}

export interface ModelRow {
  id: string;
  provider: string;
  tier: string;
  context_window: number;
  max_output: number;
  input: number;
  cached_input?: number | null;
  cache_write?: number | null;
  output: number;
  capabilities?: string[];
  live?: boolean;
}

export interface CostRow {
  group: string;
  requests: number;
  attempts: number;
  errors: number;
  input_tokens: number;
  cached_input_tokens: number;
  cache_write_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  cost_usd: number;
}

export interface Stats {
  since?: number | null;
  requests: number;
  errors: number;
  fallbacks: number;
  attempts: number;
  failed_attempts?: number;
  retries: number;
  ttft_p50_ms?: number | null;
  ttft_p95_ms?: number | null;
  input_tokens: number;
  cached_input_tokens?: number;
  cache_write_tokens?: number;
  output_tokens: number;
  reasoning_tokens?: number;
  cost_usd: number;
  reference_model?: string | null;
  reference_cost_usd?: number | null;
  savings_usd?: number | null;
}

type Cell = string | number | null | undefined;

/** A markdown cell: `-` for nothing, pipes escaped, newlines flattened. */
function cell(value: Cell): string {
  if (value === null || value === undefined || value === "") return "-";
  return String(value).replace(/\r?\n/g, " ").replace(/\|/g, "\\|");
}

export function mdTable(headers: string[], rows: Cell[][], align?: ("l" | "r")[]): string {
  const sep = headers.map((_, i) => (align?.[i] === "r" ? "---:" : "---"));
  const line = (cells: Cell[]) => `| ${cells.map(cell).join(" | ")} |`;
  return [line(headers), `| ${sep.join(" | ")} |`, ...rows.map(line)].join("\n");
}

const count = (n: number | null | undefined) => (typeof n === "number" ? Math.round(n).toLocaleString("en-US") : null);

export function usd(n: number | null | undefined): string | null {
  if (typeof n !== "number") return null;
  const sign = n < 0 ? "-" : "";
  const a = Math.abs(n);
  const digits = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
  return `${sign}$${a.toFixed(digits)}`;
}

/** A price in $ per million tokens, as given (no rounding beyond what the number needs). */
const price = (n: number | null | undefined) => (typeof n === "number" ? `$${+n.toPrecision(6)}` : null);
const ms = (n: number | null | undefined) => (typeof n === "number" ? `${count(n)} ms` : null);
const pct = (n: number | null | undefined) => (typeof n === "number" ? `${(n * 100).toFixed(0)}%` : null);
const share = (part: number, whole: number) =>
  whole ? `${count(part)} (${((part / whole) * 100).toFixed(1)}%)` : (count(part) ?? "0");

function asArray<T>(body: unknown, key: string): T[] {
  if (Array.isArray(body)) return body as T[];
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    for (const k of [key, "data", "rows"]) if (Array.isArray(b[k])) return b[k] as T[];
  }
  throw new TypeError("not a list");
}

export const rowsOf = {
  providers: (body: unknown) => asArray<ProviderRow>(body, "providers"),
  models: (body: unknown) => asArray<ModelRow>(body, "models"),
  cost: (body: unknown) => asArray<CostRow>(body, "groups"),
};

export function renderProviders(rows: ProviderRow[]): string {
  if (rows.length === 0) return "**OmniLLM providers**\n\nNo providers configured.";
  const live = rows.filter((r) => r.state === "live").length;
  const body = rows.map((r) => [
    `\`${r.name}\``,
    r.family,
    r.state === "live" ? "✅ live" : `⚠️ ${r.state}`,
    r.circuit ?? "closed",
    ms(r.ttft_ms),
    pct(r.error_rate),
    r.models,
    r.reason,
  ]);
  return [
    `**OmniLLM providers**: ${live} of ${rows.length} live`,
    "",
    mdTable(["provider", "family", "state", "circuit", "ttft", "errors", "models", "why"], body, [
      "l", "l", "l", "l", "r", "r", "r", "l",
    ]),
  ].join("\n");
}

export function renderModels(rows: ModelRow[]): string {
  if (rows.length === 0) return "**OmniLLM models**\n\nNo models served.";
  const body = rows.map((r) => [
    `\`${r.id}\``,
    r.provider,
    r.tier,
    count(r.context_window),
    count(r.max_output),
    price(r.input),
    price(r.cached_input),
    price(r.output),
    (r.capabilities ?? []).join(", "),
    r.live === false ? "no" : "yes",
  ]);
  const live = rows.filter((r) => r.live !== false).length;
  return [
    `**OmniLLM models**: ${rows.length} (${live} live); prices in $ per 1M tokens`,
    "",
    mdTable(
      ["model", "provider", "tier", "context", "max out", "in", "cached in", "out", "capabilities", "live"],
      body,
      ["l", "l", "l", "r", "r", "r", "r", "r", "l", "l"],
    ),
    "",
    "Use them in OpenClaw as `omnillm-router/<model>`, or let OmniLLM pick with `omnillm-router/auto`.",
  ].join("\n");
}

export function renderCost(rows: CostRow[], by: string): string {
  if (rows.length === 0) return `**OmniLLM cost by ${by}**\n\nNothing spent yet.`;
  const sorted = [...rows].sort((a, b) => b.cost_usd - a.cost_usd);
  const sum = (f: keyof CostRow) => rows.reduce((acc, r) => acc + (Number(r[f]) || 0), 0);
  const line = (r: CostRow): Cell[] => [
    r.group || "(none)",
    count(r.requests),
    count(r.attempts),
    count(r.errors),
    count(r.input_tokens),
    count(r.cached_input_tokens),
    count(r.output_tokens),
    count(r.reasoning_tokens),
    usd(r.cost_usd),
  ];
  const total: Cell[] = [
    "**total**",
    count(sum("requests")),
    count(sum("attempts")),
    count(sum("errors")),
    count(sum("input_tokens")),
    count(sum("cached_input_tokens")),
    count(sum("output_tokens")),
    count(sum("reasoning_tokens")),
    `**${usd(sum("cost_usd"))}**`,
  ];
  return [
    `**OmniLLM cost by ${by}**: ${usd(sum("cost_usd"))} total`,
    "",
    mdTable(
      [by, "requests", "attempts", "errors", "input", "cached in", "output", "reasoning", "cost"],
      [...sorted.map(line), total],
      ["l", "r", "r", "r", "r", "r", "r", "r", "r"],
    ),
  ].join("\n");
}

function since(ts: number | null | undefined): string {
  if (typeof ts !== "number") return "all time";
  return `${new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function renderStats(s: Stats): string {
  const rows: Cell[][] = [
    ["since", since(s.since)],
    ["requests", count(s.requests)],
    ["failed requests", share(s.errors, s.requests)],
    ["fell back", share(s.fallbacks, s.requests)],
    ["attempts", count(s.attempts)],
  ];
  if (typeof s.failed_attempts === "number") rows.push(["failed attempts", share(s.failed_attempts, s.attempts)]);
  rows.push(
    ["retries", count(s.retries)],
    ["ttft p50", ms(s.ttft_p50_ms)],
    ["ttft p95", ms(s.ttft_p95_ms)],
    ["input tokens", count(s.input_tokens)],
  );
  if (typeof s.cached_input_tokens === "number") rows.push(["cached input tokens", count(s.cached_input_tokens)]);
  rows.push(["output tokens", count(s.output_tokens)]);
  if (typeof s.reasoning_tokens === "number") rows.push(["reasoning tokens", count(s.reasoning_tokens)]);
  rows.push(["cost", usd(s.cost_usd)]);
  if (s.reference_model) {
    if (typeof s.reference_cost_usd === "number") rows.push([`cost on \`${s.reference_model}\``, usd(s.reference_cost_usd)]);
    if (typeof s.savings_usd === "number") {
      rows.push([s.savings_usd >= 0 ? "saved" : "extra spent", usd(Math.abs(s.savings_usd))]);
    }
  }
  const headline =
    s.reference_model && typeof s.savings_usd === "number"
      ? `: ${usd(s.cost_usd)} spent, ${usd(Math.abs(s.savings_usd))} ${s.savings_usd >= 0 ? "saved" : "more"} vs \`${s.reference_model}\``
      : `: ${usd(s.cost_usd)} spent`;
  return [`**OmniLLM stats**${headline}`, "", mdTable(["metric", "value"], rows, ["l", "r"])].join("\n");
}

export function renderSwitch(reply: { provider?: string | null; at?: number | null }): string {
  if (!reply.provider) return "✅ No provider preference: OmniLLM routes by strategy.";
  return (
    `✅ OmniLLM now prefers \`${reply.provider}\` for every request that does not pin a model.\n` +
    "Undo with `/omni switch --clear`."
  );
}
