/** HTTP calls to the OmniLLM gateway, with errors turned into readable messages. */

import type { OmniSettings } from "./config.js";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Why a call to the gateway did not give a usable answer; `message` is markdown for the user. */
export class GatewayError extends Error {
  constructor(
    message: string,
    readonly kind: "unreachable" | "http" | "invalid" | "refused",
    readonly status?: number,
    readonly code?: string,
    /** The gateway's own words, when it gave some. */
    readonly detail?: string,
  ) {
    super(message);
    this.name = "GatewayError";
  }
}

export interface GatewayClient {
  readonly baseUrl: string;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
}

/** The `message` of OmniLLM's `{code, message}`, OpenAI's `{error: {message}}` or a `{detail}`. */
export function errorOf(body: unknown): { code?: string; message?: string } {
  if (!body || typeof body !== "object") return {};
  const b = body as Record<string, unknown>;
  if (typeof b.message === "string") {
    return { message: b.message, ...(typeof b.code === "string" ? { code: b.code } : {}) };
  }
  if (b.error && typeof b.error === "object") {
    const e = b.error as Record<string, unknown>;
    const code = typeof e.code === "string" ? e.code : typeof e.type === "string" ? e.type : undefined;
    return { ...(typeof e.message === "string" ? { message: e.message } : {}), ...(code ? { code } : {}) };
  }
  if (typeof b.error === "string") return { message: b.error };
  if (typeof b.detail === "string") return { message: b.detail };
  return {};
}

function causeOf(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError" || e?.name === "AbortError") return "timed out";
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

export function createClient(settings: OmniSettings, fetchImpl: FetchLike = globalThis.fetch): GatewayClient {
  const origin = settings.baseUrl.replace(/\/v1$/, "");

  async function call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const url = `${origin}${path}`;
    const headers: Record<string, string> = { accept: "application/json" };
    if (settings.apiKey) headers.authorization = `Bearer ${settings.apiKey}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetchImpl(url, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(settings.timeoutMs),
      });
    } catch (err) {
      throw new GatewayError(
        `OmniLLM gateway unreachable at ${settings.baseUrl} (${causeOf(err)}). ` +
          "Is the router running (`omni up`)? Check `plugins.entries.omnillm-router.config.gatewayUrl`.",
        "unreachable",
      );
    }
    const text = await response.text().catch(() => "");
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const { code, message } = errorOf(parsed);
      const what = `${method} ${path}`;
      if (response.status === 401 || response.status === 403) {
        throw new GatewayError(
          `OmniLLM gateway refused ${what} (HTTP ${response.status}): check the plugin's \`apiKey\` ` +
            "(or `OMNILLM_API_KEY`).",
          "http",
          response.status,
          code,
        );
      }
      if (response.status === 404 && !message) {
        throw new GatewayError(
          `OmniLLM gateway at ${settings.baseUrl} does not serve ${what} (HTTP 404): update OmniLLM.`,
          "http",
          404,
        );
      }
      const detail = message ?? (text.trim().slice(0, 200) || response.statusText || "no detail");
      throw new GatewayError(
        `OmniLLM gateway answered ${what} with HTTP ${response.status}${code ? ` (${code})` : ""}: ${detail}`,
        "http",
        response.status,
        code,
        message,
      );
    }
    if (parsed === undefined) {
      throw new GatewayError(`OmniLLM gateway answered ${method} ${path} with something that is not JSON.`, "invalid");
    }
    return parsed as T;
  }

  return {
    baseUrl: settings.baseUrl,
    get: <T>(path: string) => call<T>("GET", path),
    post: <T>(path: string, body: unknown) => call<T>("POST", path, body),
  };
}
