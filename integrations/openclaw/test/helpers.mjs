import http from "node:http";

/** A fake OpenClaw plugin API that records what the plugin registers. */
export function fakeApi(pluginConfig) {
  const api = {
    pluginConfig,
    providers: [],
    commands: [],
    logs: [],
    logger: {
      info: (m) => api.logs.push(["info", m]),
      warn: (m) => api.logs.push(["warn", m]),
      debug: (m) => api.logs.push(["debug", m]),
    },
    registerProvider: (p) => api.providers.push(p),
    registerCommand: (c) => api.commands.push(c),
  };
  return api;
}

/**
 * A tiny gateway on 127.0.0.1, port 0. `routes` maps "METHOD /path?query" (or "METHOD /path")
 * to `(req, body) => [status, json]`. Every request is recorded in `server.requests`.
 */
export async function fakeGateway(routes) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let raw = "";
    for await (const chunk of req) raw += chunk;
    const body = raw ? JSON.parse(raw) : undefined;
    requests.push({ method: req.method, url: req.url, headers: req.headers, body });
    const path = req.url.split("?")[0];
    const handler = routes[`${req.method} ${req.url}`] ?? routes[`${req.method} ${path}`];
    const [status, json] = handler ? handler(req, body) : [404, { detail: "Not Found" }];
    res.writeHead(status, { "content-type": "application/json" });
    res.end(typeof json === "string" ? json : JSON.stringify(json));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A port nothing listens on: bind one, then free it. */
export async function deadUrl() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}/v1`;
}

export const PROVIDERS = [
  { name: "groq", family: "openai", state: "live", circuit: "closed", ttft_ms: 212.4, error_rate: 0.02, models: 4, base_url: "https://api.groq.com/openai/v1", reason: "" },
  { name: "anthropic", family: "anthropic", state: "no key", circuit: "closed", ttft_ms: null, error_rate: null, models: 3, base_url: "", reason: "set ANTHROPIC_API_KEY" },
  { name: "opencode", family: "openai", state: "live", circuit: "open", ttft_ms: 980, error_rate: 0.5, models: 6, base_url: "https://opencode.ai/zen/v1", reason: "rate limited | 429" },
];

export const MODELS = [
  { id: "groq/llama-3.3-70b-versatile", provider: "groq", tier: "fast", context_window: 131072, max_output: 32768, input: 0.59, cached_input: null, cache_write: null, output: 0.79, capabilities: ["tools", "json"], live: true },
  { id: "anthropic/claude-sonnet-4", provider: "anthropic", tier: "smart", context_window: 200000, max_output: 64000, input: 3, cached_input: 0.3, cache_write: 3.75, output: 15, capabilities: ["tools", "vision"], live: false },
];

export const COST = [
  { group: "groq", requests: 120, attempts: 130, errors: 10, input_tokens: 1500000, cached_input_tokens: 0, cache_write_tokens: 0, output_tokens: 250000, reasoning_tokens: 0, cost_usd: 1.0825 },
  { group: "anthropic", requests: 8, attempts: 8, errors: 0, input_tokens: 90000, cached_input_tokens: 40000, cache_write_tokens: 5000, output_tokens: 12000, reasoning_tokens: 3000, cost_usd: 2.5 },
];

export const STATS = {
  since: null, requests: 128, errors: 2, fallbacks: 11, attempts: 138, failed_attempts: 10, retries: 3,
  ttft_p50_ms: 340.2, ttft_p95_ms: 1210.7, input_tokens: 1590000, cached_input_tokens: 40000, cache_write_tokens: 5000,
  output_tokens: 262000, reasoning_tokens: 3000, cost_usd: 3.5825, reference_model: "openai/gpt-4o",
  reference_cost_usd: 6.595, savings_usd: 3.0125,
};
