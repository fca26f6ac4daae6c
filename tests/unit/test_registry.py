"""The provider registry: fifteen rows with real URLs, auth styles and key variables."""

from __future__ import annotations

import pytest

from omnillm.providers.registry import BUILTIN_PROVIDERS, FAMILIES, ProviderSpec, auth_headers

EXPECTED_KEY_ENV = {
    "opencode": "OPENCODE_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GEMINI_API_KEY",
    "xai": "XAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "moonshot": "MOONSHOT_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "anyscale": "ANYSCALE_API_KEY",
    "together": "TOGETHER_API_KEY",
    "fireworks": "FIREWORKS_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "cohere": "CO_API_KEY",
    "perplexity": "PERPLEXITY_API_KEY",
}


def test_registry_has_the_fifteen_providers_with_their_usual_key_variables() -> None:
    assert {name: spec.key_env for name, spec in BUILTIN_PROVIDERS.items()} == EXPECTED_KEY_ENV


def test_each_row_is_named_by_its_key_and_uses_a_known_family() -> None:
    for name, spec in BUILTIN_PROVIDERS.items():
        assert spec.name == name
        assert spec.family in FAMILIES


def test_only_azure_and_anyscale_need_a_base_url_from_config() -> None:
    needing = {name for name, spec in BUILTIN_PROVIDERS.items() if spec.requires_base_url}
    assert needing == {"azure", "anyscale"}
    for name, spec in BUILTIN_PROVIDERS.items():
        if name not in needing:
            assert spec.base_url.startswith("https://") and not spec.base_url.endswith("/")


@pytest.mark.parametrize(
    ("name", "base_url"),
    [
        ("openai", "https://api.openai.com/v1"),
        ("openrouter", "https://openrouter.ai/api/v1"),
        ("anthropic", "https://api.anthropic.com/v1"),
        ("google", "https://generativelanguage.googleapis.com/v1beta"),
        ("deepseek", "https://api.deepseek.com"),
        ("fireworks", "https://api.fireworks.ai/inference/v1"),
        ("perplexity", "https://api.perplexity.ai"),
        ("opencode", "https://opencode.ai/zen/v1"),
    ],
)
def test_base_urls_are_the_providers_real_ones(name: str, base_url: str) -> None:
    assert BUILTIN_PROVIDERS[name].base_url == base_url


def test_families_of_the_non_openai_providers() -> None:
    families = {name: spec.family for name, spec in BUILTIN_PROVIDERS.items()}
    assert families["anthropic"] == "anthropic"
    assert families["google"] == "gemini"
    assert families["cohere"] == "cohere"
    assert families["opencode"] == "opencode"
    assert sum(f == "openai" for f in families.values()) == 11


def test_openai_and_azure_send_max_completion_tokens_others_max_tokens() -> None:
    fields = {name: spec.options.max_tokens_field for name, spec in BUILTIN_PROVIDERS.items()}
    assert {n for n, f in fields.items() if f == "max_completion_tokens"} == {"openai", "azure"}
    assert fields["deepseek"] == "max_tokens"


def test_bearer_auth_header() -> None:
    headers = auth_headers(BUILTIN_PROVIDERS["openai"], "sk-test")
    assert headers == {"Authorization": "Bearer sk-test"}


def test_anthropic_sends_x_api_key_and_its_version_header() -> None:
    headers = auth_headers(BUILTIN_PROVIDERS["anthropic"], "sk-ant")
    assert headers == {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}


def test_gemini_sends_x_goog_api_key() -> None:
    assert auth_headers(BUILTIN_PROVIDERS["google"], "g-key") == {"x-goog-api-key": "g-key"}


def test_azure_sends_api_key_header() -> None:
    assert auth_headers(BUILTIN_PROVIDERS["azure"], "az") == {"api-key": "az"}


def test_no_key_gives_only_the_fixed_headers() -> None:
    assert auth_headers(BUILTIN_PROVIDERS["anthropic"], None) == {"anthropic-version": "2023-06-01"}
    assert auth_headers(BUILTIN_PROVIDERS["openai"], None) == {}


def test_auth_style_none_never_sends_the_key() -> None:
    spec = ProviderSpec(name="local", family="openai", base_url="http://x", auth="none")
    assert auth_headers(spec, "ignored") == {}


def test_auth_headers_does_not_change_the_row() -> None:
    spec = BUILTIN_PROVIDERS["anthropic"]
    auth_headers(spec, "sk-ant")
    assert spec.headers == {"anthropic-version": "2023-06-01"}
