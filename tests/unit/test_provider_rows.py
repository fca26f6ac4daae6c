"""Provider rows as a user configures them: the URL, headers and body each provider gets."""

from __future__ import annotations

from typing import Any

import msgspec

from omnillm.bus.messages import ChatRequest
from omnillm.config import Config, LiveProvider, resolve
from omnillm.providers.families import family_for
from omnillm.providers.openai_chat import mistral_tool_id


def live(name: str, provider: dict[str, Any], env: dict[str, str] | None = None) -> LiveProvider:
    config = msgspec.convert({"providers": {name: provider}}, Config)
    return resolve(config, env=env or {}).providers[name]


def wire(provider: LiveProvider, request: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    family = family_for(provider.spec.family)
    built = family.build_request(
        msgspec.convert(request, ChatRequest),
        model=model,
        stream=True,
        options=provider.spec.options,
    )
    return provider.spec.base_url + built.path, msgspec.json.decode(built.body)


HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


def test_azure_calls_the_deployment_url_with_api_version_and_api_key_header() -> None:
    azure = live("azure", {"base_url": "https://acme.openai.azure.com/openai/", "api_key": "k"})
    url, body = wire(azure, HELLO, "gpt-4.1-mini")
    assert url == (
        "https://acme.openai.azure.com/openai/deployments/gpt-4.1-mini/chat/completions"
        "?api-version=2024-10-21"
    )
    assert azure.headers() == {"api-key": "k"}
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


def test_azure_api_version_is_configurable() -> None:
    azure = live(
        "azure",
        {
            "base_url": "https://acme.openai.azure.com/openai",
            "api_key": "k",
            "api_version": "2025-04-01-preview",
        },
    )
    url, _ = wire(azure, HELLO, "gpt-4.1")
    assert url.endswith("/deployments/gpt-4.1/chat/completions?api-version=2025-04-01-preview")


def test_azure_v1_base_url_sends_the_deployment_as_the_model() -> None:
    azure = live("azure", {"base_url": "https://acme.openai.azure.com/openai/v1", "api_key": "k"})
    url, body = wire(azure, HELLO, "my-deployment")
    assert url == "https://acme.openai.azure.com/openai/v1/chat/completions"
    assert body["model"] == "my-deployment"


def test_azure_v1_base_url_drops_a_configured_api_version() -> None:
    """The row says which base URLs speak the plain API (``plain_api_suffix``); config
    knows no provider by name."""
    provider = {"base_url": "https://acme.openai.azure.com/openai/v1/", "api_version": "2025"}
    azure = live("azure", {**provider, "api_key": "k"})
    url, _ = wire(azure, HELLO, "my-deployment")
    assert url == "https://acme.openai.azure.com/openai/v1/chat/completions"
    assert azure.spec.plain_api_suffix == "/openai/v1"


def test_mistral_gets_nine_character_tool_ids_that_still_pair_up() -> None:
    mistral = live("mistral", {}, env={"MISTRAL_API_KEY": "k"})
    request = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_abc123def456", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123def456", "content": "sunny"},
        ]
    }
    _, body = wire(mistral, request, "mistral-small-latest")
    sent = body["messages"][1]["tool_calls"][0]["id"]
    assert len(sent) == 9 and sent.isalnum()
    assert body["messages"][2]["tool_call_id"] == sent
    assert mistral_tool_id("Ab3dE6gH9") == "Ab3dE6gH9"  # a valid id passes unchanged


def test_other_openai_compatible_providers_keep_tool_ids_as_given() -> None:
    deepseek = live("deepseek", {}, env={"DEEPSEEK_API_KEY": "k"})
    request = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_abc123def456", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123def456", "content": "x"},
        ]
    }
    _, body = wire(deepseek, request, "deepseek-chat")
    assert body["messages"][1]["tool_call_id"] == "call_abc123def456"


def test_openrouter_sends_attribution_headers_and_the_user_can_add_a_referer() -> None:
    router = live(
        "openrouter",
        {"headers": {"HTTP-Referer": "https://example.org"}},
        env={"OPENROUTER_API_KEY": "k"},
    )
    assert router.headers() == {
        "X-Title": "OmniLLM",
        "HTTP-Referer": "https://example.org",
        "Authorization": "Bearer k",
    }


def test_anthropic_sends_its_version_header_and_x_api_key() -> None:
    anthropic = live("anthropic", {}, env={"ANTHROPIC_API_KEY": "k"})
    assert anthropic.headers() == {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def test_a_route_can_ask_for_another_auth_header() -> None:
    zen = live("opencode", {}, env={"OPENCODE_API_KEY": "k"})
    assert zen.headers() == {"Authorization": "Bearer k"}
    assert zen.headers(auth="x-goog-api-key") == {"x-goog-api-key": "k"}


def test_a_config_model_overrides_only_the_fields_it_names() -> None:
    config = msgspec.convert(
        {
            "models": [
                {
                    "id": "openai/gpt-4.1-mini",
                    "price": {"output": 2.0},
                    "tier": "simple",
                    "as_of": "2026-11-01",
                    "source": "our contract",
                }
            ]
        },
        Config,
    )
    shipped = resolve(Config(), env={}).catalog.get("openai/gpt-4.1-mini")
    mine = resolve(config, env={}).catalog.get("openai/gpt-4.1-mini")
    assert shipped is not None and mine is not None
    assert (mine.price.input, mine.price.output, mine.price.cached_input) == (0.4, 2.0, 0.1)
    assert (mine.tier, mine.as_of, mine.source) == ("simple", "2026-11-01", "our contract")
    assert mine.context_window == shipped.context_window
    assert mine.capabilities == shipped.capabilities


def test_a_new_config_model_gets_defaults_and_long_context_prices() -> None:
    config = msgspec.convert(
        {
            "providers": {"local": {"family": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": [
                {
                    "id": "local/big",
                    "price": {"input": 1, "output": 4},
                    "price_above": {"threshold_tokens": 200000, "input": 2, "output": 8},
                }
            ],
        },
        Config,
    )
    spec = resolve(config, env={}).catalog.get("local/big")
    assert spec is not None
    assert (spec.context_window, spec.max_output, spec.tier) == (128_000, 4096, "medium")
    assert spec.price_above is not None
    assert (spec.price_above.threshold_tokens, spec.price_above.input) == (200_000, 2.0)
