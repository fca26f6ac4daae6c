"""Providers as data rows: name, wire-format family, base URL, auth style, key variable.

A provider that speaks a known wire format is a row here, not a module; code exists
only per family (``providers/<family>.py``). Config can add rows (a custom
OpenAI-compatible endpoint) or change a built-in row's URL, headers and options; the
merge happens in :func:`omnillm.config.resolve`.

Every family named here has its adapter (:data:`omnillm.providers.families.IMPLEMENTED`);
a row whose family had none would be listed but never served.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

import msgspec

from omnillm.providers.base import AuthStyle, WireOptions

__all__ = [
    "AUTH_STYLES",
    "BUILTIN_PROVIDERS",
    "FAMILIES",
    "AuthStyle",
    "Family",
    "ProviderSpec",
    "auth_headers",
]

Family = Literal["openai", "anthropic", "gemini", "cohere", "opencode", "responses"]
FAMILIES: Final[tuple[Family, ...]] = get_args(Family)

AUTH_STYLES: Final[tuple[AuthStyle, ...]] = get_args(AuthStyle)


class ProviderSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One provider: where to send requests and how to authenticate them."""

    name: str
    family: Family
    base_url: str
    """Without a trailing slash; the family appends its path (``/chat/completions``)."""
    auth: AuthStyle = "bearer"
    key_env: str | None = None
    """The provider's usual API key variable; setting it makes a built-in live."""
    headers: dict[str, str] = {}
    """Fixed extra headers sent on every request (``anthropic-version``)."""
    options: WireOptions = WireOptions()
    requires_base_url: bool = False
    """No public URL (Azure, self-hosted Anyscale): config must give ``base_url``."""
    plain_api_suffix: str | None = None
    """A ``base_url`` ending in this speaks the family's plain API: the family's own path
    with the model in the body, and no query parameters (``chat_path`` and ``query``
    dropped). Azure: ``/openai/v1``, its v1 API, takes the deployment as the model with no
    ``api-version``."""


def auth_headers(spec: ProviderSpec, api_key: str | None) -> dict[str, str]:
    """The headers every request to ``spec`` carries: its fixed headers plus auth.

    No key (or auth style ``none``) gives the fixed headers alone; the caller decides
    whether a missing key is an error.
    """
    headers = dict(spec.headers)
    if api_key is None or spec.auth == "none":
        return headers
    if spec.auth == "bearer":
        headers["Authorization"] = f"Bearer {api_key}"
    else:
        headers[spec.auth] = api_key
    return headers


_MAX_COMPLETION_TOKENS: Final = WireOptions(max_tokens_field="max_completion_tokens")

_ROWS: Final[tuple[ProviderSpec, ...]] = (
    # Zen routes per model (chat completions, messages, responses, gemini); its family
    # module picks the path and the auth header per route. Bearer is the chat default.
    ProviderSpec(
        name="opencode",
        family="opencode",
        base_url="https://opencode.ai/zen/v1",
        key_env="OPENCODE_API_KEY",
    ),
    ProviderSpec(
        name="openrouter",
        family="openai",
        base_url="https://openrouter.ai/api/v1",
        key_env="OPENROUTER_API_KEY",
        # Attribution on openrouter.ai; providers.openrouter.headers can set HTTP-Referer.
        headers={"X-Title": "OmniLLM"},
    ),
    ProviderSpec(
        name="openai",
        family="openai",
        base_url="https://api.openai.com/v1",
        key_env="OPENAI_API_KEY",
        options=_MAX_COMPLETION_TOKENS,
    ),
    ProviderSpec(
        name="anthropic",
        family="anthropic",
        base_url="https://api.anthropic.com/v1",
        auth="x-api-key",
        key_env="ANTHROPIC_API_KEY",
        headers={"anthropic-version": "2023-06-01"},
    ),
    ProviderSpec(
        name="google",
        family="gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta",
        auth="x-goog-api-key",
        key_env="GEMINI_API_KEY",
    ),
    ProviderSpec(
        name="xai", family="openai", base_url="https://api.x.ai/v1", key_env="XAI_API_KEY"
    ),
    ProviderSpec(
        name="deepseek",
        family="openai",
        base_url="https://api.deepseek.com",
        key_env="DEEPSEEK_API_KEY",
    ),
    ProviderSpec(
        name="moonshot",
        family="openai",
        base_url="https://api.moonshot.ai/v1",
        key_env="MOONSHOT_API_KEY",
    ),
    # base_url: https://{resource}.openai.azure.com/openai; the model is the deployment.
    # A base_url ending in /openai/v1 selects Azure's v1 API instead (no api-version).
    ProviderSpec(
        name="azure",
        family="openai",
        base_url="",
        auth="api-key",
        key_env="AZURE_OPENAI_API_KEY",
        options=WireOptions(
            max_tokens_field="max_completion_tokens",
            chat_path="/deployments/{model}/chat/completions",
            query={"api-version": "2024-10-21"},
        ),
        requires_base_url=True,
        plain_api_suffix="/openai/v1",
    ),
    # Anyscale Endpoints closed on 2024-08-01; what remains is a self-deployed
    # OpenAI-compatible service whose URL comes from `anyscale service deploy`.
    ProviderSpec(
        name="anyscale",
        family="openai",
        base_url="",
        key_env="ANYSCALE_API_KEY",
        requires_base_url=True,
    ),
    ProviderSpec(
        name="together",
        family="openai",
        base_url="https://api.together.xyz/v1",
        key_env="TOGETHER_API_KEY",
    ),
    ProviderSpec(
        name="fireworks",
        family="openai",
        base_url="https://api.fireworks.ai/inference/v1",
        key_env="FIREWORKS_API_KEY",
    ),
    ProviderSpec(
        name="mistral",
        family="openai",
        base_url="https://api.mistral.ai/v1",
        key_env="MISTRAL_API_KEY",
        options=WireOptions(tool_id_style="mistral9"),
    ),
    ProviderSpec(
        name="cohere",
        family="cohere",
        base_url="https://api.cohere.com/v2",
        key_env="CO_API_KEY",
    ),
    # No /v1 in Perplexity's path.
    ProviderSpec(
        name="perplexity",
        family="openai",
        base_url="https://api.perplexity.ai",
        key_env="PERPLEXITY_API_KEY",
    ),
)

BUILTIN_PROVIDERS: Final[Mapping[str, ProviderSpec]] = MappingProxyType(
    {row.name: row for row in _ROWS}
)
