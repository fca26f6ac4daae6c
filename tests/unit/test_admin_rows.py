"""What ``omni providers`` says about each provider, from config and shared health."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from omnillm.actors.admin import model_rows, provider_rows
from omnillm.bus.messages import ProviderHealth
from omnillm.config import Config, resolve
from omnillm.listings import render_providers, table


def rows(config: dict[str, Any], env: dict[str, str], **health: ProviderHealth) -> dict[str, Any]:
    settings = resolve(msgspec.convert(config, Config), env=env)
    return {row.name: row for row in provider_rows(settings, health)}


def test_every_builtin_provider_is_listed_with_why_it_is_not_live() -> None:
    listed = rows({}, {"OPENAI_API_KEY": "k"})
    assert len(listed) == 15
    assert (listed["openai"].state, listed["openai"].reason) == ("live", "")
    assert (listed["mistral"].state, listed["mistral"].reason) == ("no key", "set MISTRAL_API_KEY")
    assert listed["azure"].state == "needs base_url"
    assert listed["azure"].reason == "set providers.azure.base_url (and AZURE_OPENAI_API_KEY)"
    assert listed["openai"].base_url == "https://api.openai.com/v1"
    assert listed["openai"].models >= 3


def test_disabled_and_declared_providers_say_so() -> None:
    config = {
        "providers": {
            "openai": {"enabled": False},
            "local": {
                "family": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key_env": "LOCAL_KEY",
            },
        }
    }
    listed = rows(config, {"OPENAI_API_KEY": "k"})
    assert (listed["openai"].state, listed["openai"].reason) == (
        "disabled",
        "providers.openai.enabled is false",
    )
    assert (listed["local"].state, listed["local"].reason) == ("no key", "set LOCAL_KEY")
    assert listed["local"].models == 0


def test_opencode_declared_without_a_key_is_live_for_free_models() -> None:
    listed = rows({"providers": {"opencode": {}}}, {})
    assert (listed["opencode"].state, listed["opencode"].reason) == (
        "live",
        "free models only; set OPENCODE_API_KEY for the others",
    )


def test_what_callers_saw_overrides_live() -> None:
    refused = ProviderHealth("opencode", "free_tier_refused", "403 free tier refused", 1.0)
    rejected = ProviderHealth("openai", "auth_failed", "401 Incorrect API key", 1.0)
    recovered = ProviderHealth("anthropic", "ok", "", 2.0)
    listed = rows(
        {},
        {"OPENCODE_API_KEY": "public", "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
        opencode=refused,
        openai=rejected,
        anthropic=recovered,
    )
    assert (listed["opencode"].state, listed["opencode"].reason) == (
        "refused free tier",
        "403 free tier refused",
    )
    assert (listed["openai"].state, listed["openai"].reason) == (
        "key rejected",
        "401 Incorrect API key",
    )
    assert listed["anthropic"].state == "live"


def test_the_providers_table_is_aligned_and_readable() -> None:
    text = render_providers(list(rows({}, {"OPENAI_API_KEY": "k"}).values()))
    header, *lines = text.splitlines()
    assert header.split() == [
        "provider",
        "family",
        "state",
        "circuit",
        "ttft",
        "errors",
        "models",
        "base",
        "url",
        "why",
    ]
    openai = next(line for line in lines if line.startswith("openai "))
    assert openai.index("live") == header.index("state")


def test_table_renders_missing_values_and_lists() -> None:
    assert table(("a", "b"), [(None, ["x", "y"]), (1.5, [])]) == "a    b\n-    x,y\n1.5  -"


def test_model_rows_carry_prices_and_liveness() -> None:
    settings = resolve(Config(), env={"OPENAI_API_KEY": "k"})
    by_id = {row.id: row for row in model_rows(settings)}
    mini = by_id["openai/gpt-4.1-mini"]
    assert (mini.input, mini.output, mini.cached_input) == (0.4, 1.6, 0.1)
    assert mini.live and "tools" in mini.capabilities
    assert not by_id[next(i for i in by_id if i.startswith("anthropic/"))].live


def test_circuit_and_latency_show_per_provider() -> None:
    from omnillm.bus.breaker import BreakerState
    from omnillm.bus.breakers import breaker_key
    from omnillm.bus.messages import LatencyStat

    settings = resolve(Config(), env={"OPENAI_API_KEY": "k"})
    circuits = {breaker_key("openai"): BreakerState(state="open", opened_at=time.time())}
    latency = {
        "openai/gpt-4.1-mini": LatencyStat("openai", "openai/gpt-4.1-mini", 420.0, 0.1, 9, 1.0),
        "openai/gpt-5.4": LatencyStat("openai", "openai/gpt-5.4", 900.0, 0.0, 3, 1.0),
    }
    row = {r.name: r for r in provider_rows(settings, {}, circuits, latency)}["openai"]
    assert (row.circuit, row.ttft_ms, row.error_rate) == ("open", 420.0, 0.1)
    text = render_providers([row])
    assert "open" in text and "420 ms" in text and "10%" in text
