import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";

import plugin, { createPlugin, normalizeBaseUrl, resolveSettings, STATIC_MODEL_IDS } from "../dist/index.js";
import { COST, deadUrl, fakeApi, fakeGateway, MODELS, PROVIDERS, STATS } from "./helpers.mjs";

const manifest = JSON.parse(await readFile(new URL("../openclaw.plugin.json", import.meta.url), "utf8"));
const pkg = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8"));

function registered(pluginConfig, options) {
  const api = fakeApi(pluginConfig);
  (options ? createPlugin(options) : plugin).register(api);
  return api;
}

const omni = (api, args) => api.commands[0].handler({ args, commandBody: `/omni ${args}`, isAuthorizedSender: true, channel: "test" });

describe("manifest and entry", () => {
  test("ids agree across manifest, package.json and the entry", () => {
    assert.equal(manifest.id, "omnillm-router");
    assert.deepEqual(manifest.providers, ["omnillm-router"]);
    assert.equal(manifest.configSchema.type, "object");
    assert.deepEqual(Object.keys(manifest.configSchema.properties).sort(), ["apiKey", "gatewayUrl", "timeoutMs"]);
    assert.equal(plugin.id, manifest.id);
    assert.deepEqual(pkg.openclaw.extensions, ["./dist/index.js"]);
    assert.deepEqual(pkg.openclaw.providers, ["omnillm-router"]);
    assert.equal(typeof plugin.register, "function");
  });

  test("settings: config, then env, then default; /v1 added once", () => {
    assert.equal(normalizeBaseUrl("http://h:4000"), "http://h:4000/v1");
    assert.equal(normalizeBaseUrl("http://h:4000/v1/"), "http://h:4000/v1");
    assert.equal(normalizeBaseUrl("localhost:9"), "http://localhost:9/v1");
    assert.deepEqual(resolveSettings({}, {}), { baseUrl: "http://127.0.0.1:4000/v1", timeoutMs: 5000 });
    assert.deepEqual(resolveSettings(undefined, { OMNILLM_GATEWAY_URL: "http://g:1", OMNILLM_API_KEY: "k" }), {
      baseUrl: "http://g:1/v1", apiKey: "k", timeoutMs: 5000,
    });
    assert.equal(resolveSettings({ gatewayUrl: "http://c:2/v1", apiKey: "x" }, { OMNILLM_GATEWAY_URL: "http://g:1" }).baseUrl, "http://c:2/v1");
  });
});

describe("registration", () => {
  test("registers the omnillm-router provider and the /omni command", () => {
    const api = registered({});
    assert.equal(api.providers.length, 1);
    assert.equal(api.commands.length, 1);
    const [provider] = api.providers;
    assert.equal(provider.id, "omnillm-router");
    assert.equal(provider.label, "OmniLLM Router");
    assert.equal(provider.catalog.order, "simple");
    assert.equal(typeof provider.catalog.run, "function");
    assert.equal(typeof provider.resolveDynamicModel, "function");
    const [command] = api.commands;
    assert.equal(command.name, "omni");
    assert.match(command.name, /^[a-z][a-z0-9_-]*$/);
    assert.equal(command.acceptsArgs, true);
    assert.equal(command.requireAuth, true);
  });

  test("an API without registerProvider still gets the command", () => {
    const api = fakeApi({});
    delete api.registerProvider;
    plugin.register(api);
    assert.equal(api.commands.length, 1);
    assert.ok(api.logs.some(([level]) => level === "warn"));
  });

  test("register() twice does not share state between API objects", () => {
    const a = registered({});
    const b = registered({ gatewayUrl: "http://other:9" });
    assert.equal(a.providers.length, 1);
    assert.equal(b.providers.length, 1);
  });
});

describe("provider catalog", () => {
  let gw;
  before(async () => {
    gw = await fakeGateway({
      "GET /v1/models": () => [200, { object: "list", data: [
        { id: "auto", object: "model", owned_by: "omnillm" },
        { id: "cheap", object: "model", owned_by: "omnillm" },
        { id: "groq/llama-3.3-70b-versatile", object: "model", owned_by: "groq" },
      ] }],
    });
  });
  after(() => gw.close());

  test("lists the gateway's /v1/models, sending the bearer key", async () => {
    const api = registered({ gatewayUrl: gw.url, apiKey: "sk-omni" });
    const result = await api.providers[0].catalog.run({});
    assert.equal(result.provider.baseUrl, gw.url);
    assert.equal(result.provider.api, "openai-completions");
    assert.equal(result.provider.apiKey, "sk-omni");
    assert.deepEqual(result.provider.models.map((m) => m.id), ["auto", "cheap", "groq/llama-3.3-70b-versatile"]);
    const auto = result.provider.models[0];
    assert.deepEqual(auto.input, ["text", "image"]);
    assert.deepEqual(auto.cost, { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 });
    assert.ok(auto.contextWindow >= 40000 && auto.maxTokens > 0);
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer sk-omni");
  });

  test("falls back to the static aliases when the gateway is down", async () => {
    const api = registered({ gatewayUrl: await deadUrl() });
    const result = await api.providers[0].catalog.run({});
    assert.deepEqual(result.provider.models.map((m) => m.id), ["auto", "fast", "cheap", "smart", "free", "vision"]);
    assert.deepEqual([...STATIC_MODEL_IDS], ["auto", "fast", "cheap", "smart", "free", "vision"]);
    assert.equal(result.provider.apiKey, "omnillm-local");
    const offline = await api.providers[0].staticCatalog.run();
    assert.equal(offline.provider.models.length, 6);
  });

  test("resolveDynamicModel passes any id through to the gateway", () => {
    const api = registered({ gatewayUrl: "http://127.0.0.1:4000" });
    const m = api.providers[0].resolveDynamicModel({ modelId: "openai/gpt-4o-mini" });
    assert.equal(m.id, "openai/gpt-4o-mini");
    assert.equal(m.provider, "omnillm-router");
    assert.equal(m.baseUrl, "http://127.0.0.1:4000/v1");
    assert.equal(m.api, "openai-completions");
  });

  test("the setup auth method patches config for the provider and defaults to auto", async () => {
    const api = registered({ gatewayUrl: gw.url });
    const prompts = [];
    const out = await api.providers[0].auth[0].run({ prompter: { text: async (o) => { prompts.push(o); return gw.url.replace(/\/v1$/, ""); } } });
    assert.equal(prompts.length, 1);
    assert.equal(out.defaultModel, "omnillm-router/auto");
    const p = out.configPatch.models.providers["omnillm-router"];
    assert.equal(p.baseUrl, gw.url);
    assert.ok(p.models.length >= 1);
    assert.ok("omnillm-router/auto" in out.configPatch.agents.defaults.models);
    assert.equal(out.configPatch.plugins.entries["omnillm-router"].config.gatewayUrl, gw.url);
  });
});

describe("/omni against a gateway", () => {
  let gw;
  let switched;
  before(async () => {
    switched = null;
    gw = await fakeGateway({
      "GET /v1/admin/providers": () => [200, PROVIDERS],
      "GET /v1/admin/models": () => [200, MODELS],
      "GET /v1/admin/cost?by=provider": () => [200, COST],
      "GET /v1/admin/cost?by=model": () => [200, []],
      "GET /v1/admin/stats": () => [200, STATS],
      "POST /v1/admin/switch": (_req, body) => {
        if (body.clear) { switched = null; return [200, { provider: null, at: 1760000000 }]; }
        if (body.provider === undefined) return [200, { provider: switched, at: 1760000000 }];
        if (body.provider === "nope") return [200, { code: "unknown_provider", message: "no provider named nope" }];
        if (body.provider === "anthropic") return [409, { code: "not_live", message: "anthropic is not live: no key" }];
        switched = body.provider;
        return [200, { provider: body.provider, at: 1760000000 }];
      },
    });
  });
  after(() => gw.close());

  const api = () => registered({ gatewayUrl: gw.url, apiKey: "sk-omni" });

  test("help with no subcommand", async () => {
    const reply = await omni(api(), "");
    assert.match(reply.text, /\/omni models/);
    assert.match(reply.text, /\/omni switch --clear/);
    assert.ok(!reply.isError);
  });

  test("unknown subcommand", async () => {
    const reply = await omni(api(), "dance");
    assert.equal(reply.isError, true);
    assert.match(reply.text, /Unknown subcommand `dance`/);
  });

  test("providers: a markdown table with state, circuit, latency and errors", async () => {
    const reply = await omni(api(), "providers");
    const t = reply.text;
    assert.match(t, /^\*\*OmniLLM providers\*\*: 2 of 3 live/);
    assert.match(t, /\| provider \| family \| state \| circuit \| ttft \| errors \| models \| why \|/);
    assert.match(t, /\| `groq` \| openai \| ✅ live \| closed \| 212 ms \| 2% \| 4 \| - \|/);
    assert.match(t, /\| `anthropic` \| anthropic \| ⚠️ no key \| closed \| - \| - \| 3 \| set ANTHROPIC_API_KEY \|/);
    assert.match(t, /\| `opencode` .* open \| 980 ms \| 50% \| 6 \| rate limited \\\| 429 \|/);
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer sk-omni");
    assert.equal(gw.requests.at(-1).method, "GET");
    assert.equal(gw.requests.at(-1).url, "/v1/admin/providers");
  });

  test("status is an alias of providers", async () => {
    assert.match((await omni(api(), "status")).text, /OmniLLM providers/);
  });

  test("models: a markdown table with prices and context", async () => {
    const t = (await omni(api(), "models")).text;
    assert.match(t, /^\*\*OmniLLM models\*\*: 2 \(1 live\)/);
    assert.match(t, /\| `groq\/llama-3.3-70b-versatile` \| groq \| fast \| 131,072 \| 32,768 \| \$0.59 \| - \| \$0.79 \| tools, json \| yes \|/);
    assert.match(t, /\| `anthropic\/claude-sonnet-4` \| anthropic \| smart \| 200,000 \| 64,000 \| \$3 \| \$0.3 \| \$15 \| tools, vision \| no \|/);
    assert.match(t, /omnillm-router\/auto/);
  });

  test("cost: by provider, most expensive first, with a total row", async () => {
    const t = (await omni(api(), "cost")).text;
    assert.equal(gw.requests.at(-1).url, "/v1/admin/cost?by=provider");
    assert.match(t, /^\*\*OmniLLM cost by provider\*\*: \$3.58 total/);
    const lines = t.split("\n");
    const a = lines.findIndex((l) => l.startsWith("| anthropic"));
    const g = lines.findIndex((l) => l.startsWith("| groq"));
    assert.ok(a > 0 && g > a, "sorted by cost");
    assert.match(t, /\| groq \| 120 \| 130 \| 10 \| 1,500,000 \| 0 \| 250,000 \| 0 \| \$1.08 \|/);
    assert.match(t, /\| \*\*total\*\* \| 128 \| 138 \| 10 \| 1,590,000 \| 40,000 \| 262,000 \| 3,000 \| \*\*\$3.58\*\* \|/);
  });

  test("cost: other groupings and a bad one", async () => {
    const t = (await omni(api(), "cost model")).text;
    assert.equal(gw.requests.at(-1).url, "/v1/admin/cost?by=model");
    assert.match(t, /Nothing spent yet/);
    const bad = await omni(api(), "cost planet");
    assert.equal(bad.isError, true);
    assert.match(bad.text, /Unknown grouping `planet`/);
  });

  test("stats: a two-column table with savings", async () => {
    const t = (await omni(api(), "stats")).text;
    assert.match(t, /^\*\*OmniLLM stats\*\*: \$3.58 spent, \$3.01 saved vs `openai\/gpt-4o`/);
    assert.match(t, /\| requests \| 128 \|/);
    assert.match(t, /\| failed requests \| 2 \(1.6%\) \|/);
    assert.match(t, /\| fell back \| 11 \(8.6%\) \|/);
    assert.match(t, /\| ttft p50 \| 340 ms \|/);
    assert.match(t, /\| ttft p95 \| 1,211 ms \|/);
    assert.match(t, /\| cost on `openai\/gpt-4o` \| \$6.59 \|/);
    assert.match(t, /\| saved \| \$3.01 \|/);
    assert.match(t, /\| since \| all time \|/);
  });

  test("switch <provider>: posts {provider} and confirms", async () => {
    const reply = await omni(api(), "switch groq");
    const req = gw.requests.at(-1);
    assert.equal(req.method, "POST");
    assert.equal(req.url, "/v1/admin/switch");
    assert.equal(req.headers["content-type"], "application/json");
    assert.deepEqual(req.body, { provider: "groq" });
    assert.ok(!reply.isError);
    assert.match(reply.text, /now prefers `groq`/);
  });

  test("switch with no provider shows the current preference", async () => {
    const reply = await omni(api(), "switch");
    assert.deepEqual(gw.requests.at(-1).body, {});
    assert.match(reply.text, /OmniLLM prefers `groq`/);
  });

  test("switch --clear: posts {clear: true}", async () => {
    const reply = await omni(api(), "switch --clear");
    assert.deepEqual(gw.requests.at(-1).body, { clear: true });
    assert.match(reply.text, /No provider preference/);
  });

  test("switch error in a 200 body {code, message}", async () => {
    const reply = await omni(api(), "switch nope");
    assert.equal(reply.isError, true);
    assert.equal(reply.text, "❌ Switch refused: no provider named nope (`unknown_provider`)");
  });

  test("switch error with an error status", async () => {
    const reply = await omni(api(), "switch anthropic");
    assert.equal(reply.isError, true);
    assert.equal(reply.text, "❌ Switch refused: anthropic is not live: no key (`not_live`)");
  });

  test("switch usage errors do not call the gateway", async () => {
    const n = gw.requests.length;
    assert.equal((await omni(api(), "switch groq --clear")).isError, true);
    assert.equal((await omni(api(), "switch a b")).isError, true);
    assert.equal(gw.requests.length, n);
  });

  test("args from the command body when ctx.args is missing", async () => {
    const reply = await api().commands[0].handler({ commandBody: "/omni stats" });
    assert.match(reply.text, /OmniLLM stats/);
  });
});

describe("/omni when the gateway misbehaves", () => {
  test("unreachable gateway: a clear message, not a throw", async () => {
    const url = await deadUrl();
    const reply = await omni(registered({ gatewayUrl: url }), "providers");
    assert.equal(reply.isError, true);
    assert.match(reply.text, /^⚠️ OmniLLM gateway unreachable at http:\/\/127\.0\.0\.1:\d+\/v1 \(ECONNREFUSED\)/);
    assert.match(reply.text, /omni up/);
  });

  test("timeout counts as unreachable", async () => {
    // Like a real request in flight, keep the event loop alive until the abort.
    const hang = (_url, init) => new Promise((_, reject) => {
      const alive = setTimeout(() => reject(new Error("the plugin never timed out")), 10_000);
      init.signal.addEventListener("abort", () => { clearTimeout(alive); reject(init.signal.reason); });
    });
    const api = registered({ gatewayUrl: "http://10.255.255.1:4000", timeoutMs: 100 }, { fetch: hang });
    const reply = await omni(api, "stats");
    assert.match(reply.text, /unreachable at http:\/\/10\.255\.255\.1:4000\/v1 \(timed out\)/);
  });

  test("no API key sent when none is configured", async () => {
    const seen = [];
    const fetch = async (url, init) => { seen.push([url, init]); return new Response(JSON.stringify(STATS), { status: 200 }); };
    await omni(registered({}, { fetch, env: {} }), "stats");
    assert.equal(seen[0][0], "http://127.0.0.1:4000/v1/admin/stats");
    assert.equal(seen[0][1].headers.authorization, undefined);
  });

  test("401: points at the API key", async () => {
    const fetch = async () => new Response(JSON.stringify({ error: { message: "bad key", type: "auth" } }), { status: 401 });
    const reply = await omni(registered({ apiKey: "wrong" }, { fetch, env: {} }), "models");
    assert.equal(reply.isError, true);
    assert.match(reply.text, /refused GET \/v1\/admin\/models \(HTTP 401\).*apiKey/);
  });

  test("404 without a body: the gateway is too old", async () => {
    const fetch = async () => new Response("", { status: 404 });
    const reply = await omni(registered({}, { fetch, env: {} }), "cost");
    assert.match(reply.text, /does not serve GET \/v1\/admin\/cost\?by=provider \(HTTP 404\): update OmniLLM/);
  });

  test("500 with OpenAI's error JSON: the gateway's own words", async () => {
    const fetch = async () => new Response(JSON.stringify({ error: { message: "no NATS", type: "server_error", code: "no_router" } }), { status: 503 });
    const reply = await omni(registered({}, { fetch, env: {} }), "providers");
    assert.equal(reply.text, "⚠️ OmniLLM gateway answered GET /v1/admin/providers with HTTP 503 (no_router): no NATS");
  });

  test("non-JSON and wrongly shaped answers", async () => {
    const html = async () => new Response("<html>hi</html>", { status: 200 });
    assert.match((await omni(registered({}, { fetch: html, env: {} }), "models")).text, /not JSON/);
    const obj = async () => new Response(JSON.stringify({ hello: 1 }), { status: 200 });
    const reply = await omni(registered({}, { fetch: obj, env: {} }), "providers");
    assert.equal(reply.isError, true);
    assert.match(reply.text, /unexpected shape/);
  });
});
