"""The config file a user writes, the errors they read, and the providers it makes live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from omnillm.bus.messages import TokenUsage
from omnillm.config import (
    Config,
    LimitsConfig,
    ProviderConfig,
    ReliabilityConfig,
    _checks,
    load_config,
    resolve,
)
from omnillm.errors import ConfigError
from omnillm.providers.catalog import cost_usd

DESIGN_EXAMPLE = """\
nats:
  url: nats://127.0.0.1:4222
  embedded: {port: 4222, data_dir: .omnillm/nats}
gateway:
  host: 127.0.0.1
  port: 4000
  keys:
    - {name: team-a, key_env: OMNI_KEY_TEAM_A, models: [auto, openai/*], daily_budget_usd: 5}
providers:
  openai: {}
  anthropic: {api_key_env: MY_ANTHROPIC_KEY, rpm: 50}
  local:
    family: openai
    base_url: http://127.0.0.1:8000/v1
    api_key: none
models:
  - id: local/llama-3.1-8b
    context_window: 128000
    max_output: 4096
    price: {input: 0, output: 0}
    capabilities: [tools]
    tier: simple
    fallbacks: [openai/gpt-4o-mini]
routing:
  strategy: cost
  priority: [opencode, openai, anthropic]
  deny: [perplexity/*]
  aliases: {smart: {tier: complex}, mine: [local/llama-3.1-8b, openai/gpt-4o-mini]}
reliability:
  max_attempts: 3
  ttft_timeout_s: 10
  stall_timeout_s: 10
  request_timeout_s: 120
  retry_after_cap_s: 10
  breaker: {failures: 5, window_s: 30, cooldown_s: 15}
ledger:
  path: .omnillm/ledger.sqlite
"""

CUSTOM_PROVIDER = """\
providers:
  vllm:
    family: openai
    base_url: http://10.0.0.5:8000/v1/
    api_key: sk-local-secret
models:
  - id: vllm/qwen3-32b
    model: Qwen/Qwen3-32B
    context_window: 32768
    max_output: 8192
    price: {input: 0.10, output: 0.30}
    capabilities: [tools]
    tier: medium
    fallbacks: [openai/gpt-4.1-mini, openai/gpt-5.4-mini]
"""


def _write(tmp_path: Path, text: str, name: str = "omnillm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _load(tmp_path: Path, text: str, **env: str) -> Config:
    return load_config(_write(tmp_path, text), env=env)


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    prefix = f"{path}: "
    assert info.value.message.startswith(prefix)
    return info.value.message.removeprefix(prefix)


# --- finding and reading the file ----------------------------------------------------


def test_no_file_gives_the_built_in_defaults(tmp_path: Path) -> None:
    config = load_config(env={}, cwd=tmp_path)
    assert config == Config()
    assert config.gateway.port == 4000
    assert config.nats.url is None
    assert config.nats.max_payload == 8 * 1024 * 1024
    assert config.reliability.max_request_bytes == 4 * 1024 * 1024


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == Config()


def test_omnillm_yaml_in_the_working_directory_is_found(tmp_path: Path) -> None:
    _write(tmp_path, "gateway: {port: 4100}\n")
    assert load_config(env={}, cwd=tmp_path).gateway.port == 4100


def test_yaml_wins_over_json_when_both_are_present(tmp_path: Path) -> None:
    _write(tmp_path, '{"gateway": {"port": 4300}}', "omnillm.json")
    assert load_config(env={}, cwd=tmp_path).gateway.port == 4300
    _write(tmp_path, "gateway: {port: 4200}\n", "omnillm.yml")
    assert load_config(env={}, cwd=tmp_path).gateway.port == 4200


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"log": {"level": "debug"}}', "custom.json")
    assert load_config(path, env={}).log.level == "debug"


def test_a_missing_named_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file$"):
        load_config(path, env={})


def test_the_design_example_loads(tmp_path: Path) -> None:
    config = _load(tmp_path, DESIGN_EXAMPLE)
    assert config.providers["anthropic"].rpm == 50
    assert config.models[0].fallbacks == ["openai/gpt-4o-mini"]
    assert config.routing.deny == ["perplexity/*"]
    assert config.gateway.keys[0].daily_budget_usd == 5
    assert config.reliability.breaker.failures == 5


# --- the errors a user reads ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models:\n  - id: openai/x\n    price: {input: cheap, output: 1}\n",
            "models[0].price.input: expected a number, got a string",
        ),
        ("gateway: {port: '4000'}\n", "gateway.port: expected an integer, got a string"),
        ("gatway: {port: 4000}\n", "unknown key 'gatway'"),
        ("providers:\n  openai: {rmp: 50}\n", "providers.openai: unknown key 'rmp'"),
        (
            "providers:\n  openai: {enabled: maybe}\n",
            "providers.openai.enabled: expected true or false, got a string",
        ),
        ("routing: {deny: perplexity/*}\n", "routing.deny: expected a list, got a string"),
        ("nats: 4222\n", "nats: expected a mapping, got an integer"),
        ("- openai\n", "expected a mapping, got a list"),
        ("models:\n  - tier: simple\n", "models[0]: missing required key 'id'"),
        (
            "providers:\n  openai:\n    headers: {X-Title: 1}\n",
            "providers.openai.headers.X-Title: expected a string, got an integer",
        ),
        (
            "routing: {strategy: cheapest}\n",
            "routing.strategy: expected one of 'cost', 'latency', 'priority', got 'cheapest'",
        ),
        (
            "models:\n  - id: openai/x\n    tier: genius\n",
            "models[0].tier: expected one of 'simple', 'medium', 'complex', 'reasoning',"
            " got 'genius'",
        ),
    ],
)
def test_type_errors_name_the_key_path_and_the_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _error(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "providers:\n  local: {family: llama, base_url: http://x}\n",
            "providers.local.family: expected one of 'openai', 'anthropic', 'gemini', 'cohere',"
            " 'opencode', 'responses', got 'llama'",
        ),
        (
            "providers:\n  local: {base_url: http://127.0.0.1:8000/v1}\n",
            "providers.local.family: required for a provider that is not built in",
        ),
        (
            "providers:\n  local: {family: openai}\n",
            "providers.local.base_url: required for a provider that is not built in",
        ),
        (
            "providers:\n  azure: {api_key_env: AZ}\n",
            "providers.azure.base_url: required for azure (it has no public URL)",
        ),
        (
            "providers:\n  anyscale: {}\n",
            "providers.anyscale.base_url: required for anyscale (it has no public URL)",
        ),
        (
            "providers:\n  my.llm: {family: openai, base_url: http://x}\n",
            "providers[\"my.llm\"]: expected a name of letters, digits, '-' or '_'"
            " (it becomes a subject)",
        ),
        ("models:\n  - id: gpt-4o\n", "models[0].id: expected 'provider/model', got 'gpt-4o'"),
        (
            "models:\n  - id: local/llama\n",
            "models[0].id: unknown provider 'local' (declare it under providers:)",
        ),
        (
            "models:\n  - id: openai/x\n    fallbacks: [openai/gpt-9]\n",
            "models[0].fallbacks[0]: unknown model 'openai/gpt-9' (not in the catalog or models:)",
        ),
        (
            "routing:\n  aliases:\n    mine: [openai/gpt-4.1-mini, local/nope]\n",
            "routing.aliases.mine[1]: unknown model 'local/nope' (not in the catalog or models:)",
        ),
        (
            "routing:\n  aliases:\n    smart: {models: [openai/gpt-9]}\n",
            "routing.aliases.smart.models[0]: unknown model 'openai/gpt-9'"
            " (not in the catalog or models:)",
        ),
        (
            "models:\n  - id: openai/x\n    price: {input: 1, output: -0.5}\n",
            "models[0].price.output: expected a price of 0 or more, got -0.5",
        ),
        (
            "models:\n  - id: openai/x\n    capabilities: [tool]\n",
            "models[0].capabilities[0]: expected one of 'tools', 'vision', 'reasoning',"
            " 'prefill', got 'tool'",
        ),
        (
            "log: {level: verbose}\n",
            "log.level: expected one of 'debug', 'info', 'warning', 'error', 'critical',"
            " got 'verbose'",
        ),
        ("gateway: {port: 70000}\n", "gateway.port: expected a port number (0-65535), got 70000"),
        ("providers:\n  openai: {rpm: 0}\n", "providers.openai.rpm: expected 1 or more, got 0"),
        ("gateway:\n  keys:\n    - name: team-a\n", "gateway.keys[0]: expected 'key' or 'key_env'"),
        (
            "reliability: {max_attempts: 0}\n",
            "reliability.max_attempts: expected a value above 0, got 0",
        ),
        ("ledger: {linger_s: -1}\n", "ledger.linger_s: expected 0 (off) or more, got -1"),
    ],
)
def test_semantic_errors_name_the_key_path(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_a_fallback_may_name_a_model_declared_in_the_same_file(tmp_path: Path) -> None:
    text = (
        "providers:\n  local: {family: openai, base_url: http://x}\n"
        "models:\n  - id: local/a\n    fallbacks: [local/b]\n  - id: local/b\n"
    )
    assert _load(tmp_path, text).models[0].fallbacks == ["local/b"]


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "models:\n  - id: openai/x\n - tier: simple\n")
    assert message.startswith("line 3, column 2: invalid YAML: ")


def test_json_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"nats":\n  {"url": ]}}', "omnillm.json")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.message == f"{path}: line 2, column 11: invalid JSON: invalid character"


# --- limits, and their old names under reliability ----------------------------------

MiB = 1024 * 1024


def test_limits_default_to_what_their_old_keys_defaulted_to() -> None:
    assert Config().limits == LimitsConfig(concurrency=64, max_request_bytes=4 * MiB)
    reliability = ReliabilityConfig()
    assert (reliability.workers, reliability.max_request_bytes) == (64, 4 * MiB)


def test_limits_set_the_pool_size_and_the_largest_request(tmp_path: Path) -> None:
    config = _load(tmp_path, "limits: {concurrency: 8, max_request_bytes: 65536}\n")
    assert config.limits == LimitsConfig(concurrency=8, max_request_bytes=65536)


def test_the_old_keys_under_reliability_still_set_the_limits(tmp_path: Path) -> None:
    config = _load(tmp_path, "reliability: {workers: 8, max_request_bytes: 65536}\n")
    assert config.limits == LimitsConfig(concurrency=8, max_request_bytes=65536)
    assert (config.reliability.workers, config.reliability.max_request_bytes) == (8, 65536)
    built = Config(reliability=ReliabilityConfig(workers=8))  # the same in code
    assert built.limits == LimitsConfig(concurrency=8)
    assert resolve(built, env={}).config.limits.concurrency == 8


def test_an_old_key_and_its_new_one_may_agree(tmp_path: Path) -> None:
    text = "reliability: {workers: 8}\nlimits: {concurrency: 8, max_request_bytes: 1000}\n"
    config = _load(tmp_path, text)
    assert config.limits == LimitsConfig(concurrency=8, max_request_bytes=1000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "reliability: {workers: 16}\nlimits: {concurrency: 8}\n",
            "limits.concurrency: 8 conflicts with reliability.workers: 16, its old name; keep one",
        ),
        (  # the new key at its default still counts as given
            "reliability: {max_request_bytes: 1000}\nlimits: {max_request_bytes: 4194304}\n",
            "limits.max_request_bytes: 4194304 conflicts with reliability.max_request_bytes:"
            " 1000, its old name; keep one",
        ),
        ("limits: {concurrency: 0}\n", "limits.concurrency: expected a value above 0, got 0"),
        (
            "limits: {max_request_bytes: -1}\n",
            "limits.max_request_bytes: expected a value above 0, got -1",
        ),
        ("reliability: {workers: 0}\n", "reliability.workers: expected a value above 0, got 0"),
        ("limits: {workers: 8}\n", "limits: unknown key 'workers'"),
    ],
)
def test_limit_errors_name_the_key_the_user_wrote(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_resolve_refuses_old_and_new_limits_that_differ_in_code() -> None:
    config = Config(
        reliability=ReliabilityConfig(max_request_bytes=1000),
        limits=LimitsConfig(max_request_bytes=2000),
    )
    with pytest.raises(ConfigError) as info:
        resolve(config, env={})
    assert info.value.message == (
        "limits.max_request_bytes: 2000 conflicts with reliability.max_request_bytes: 1000,"
        " its old name; keep one"
    )


def test_a_config_with_old_limit_keys_survives_a_round_trip(tmp_path: Path) -> None:
    config = _load(tmp_path, "reliability: {workers: 8}\n")
    again = msgspec.convert(msgspec.to_builtins(config), Config)
    assert again == config
    assert resolve(again, env={}).config.limits.concurrency == 8


# --- environment overrides -----------------------------------------------------------


def test_environment_overrides_scalars(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "gateway: {port: 4000}\nlog: {level: info}\n",
        OMNI_NATS_URL="nats://nats.internal:4222",
        OMNI_GATEWAY_PORT="8080",
        OMNI_LOG_LEVEL="debug",
        OMNI_DATA_DIR="/var/lib/omnillm",
    )
    assert config.nats.url == "nats://nats.internal:4222"
    assert config.gateway.port == 8080
    assert config.log.level == "debug"
    assert config.data_dir == "/var/lib/omnillm"


def test_environment_overrides_apply_without_a_file(tmp_path: Path) -> None:
    config = load_config(env={"OMNI_GATEWAY_PORT": "0"}, cwd=tmp_path)
    assert config.gateway.port == 0


def test_a_non_integer_port_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"OMNI_GATEWAY_PORT": "http"}, cwd=tmp_path)
    assert info.value.message == "OMNI_GATEWAY_PORT: expected an integer, got 'http'"


def test_an_invalid_log_level_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^OMNI_LOG_LEVEL: expected one of"):
        load_config(env={"OMNI_LOG_LEVEL": "loud"}, cwd=tmp_path)


# --- resolving live providers --------------------------------------------------------


def test_custom_openai_compatible_provider_is_live_with_its_models(tmp_path: Path) -> None:
    settings = resolve(_load(tmp_path, CUSTOM_PROVIDER), env={})
    live = settings.providers["vllm"]
    assert live.spec.family == "openai"
    assert live.spec.base_url == "http://10.0.0.5:8000/v1"
    assert live.api_key == "sk-local-secret"
    assert live.headers() == {"Authorization": "Bearer sk-local-secret"}
    spec = settings.catalog.get("vllm/qwen3-32b")
    assert spec is not None
    assert (spec.provider, spec.model) == ("vllm", "Qwen/Qwen3-32B")
    assert (spec.context_window, spec.max_output, spec.tier) == (32768, 8192, "medium")
    assert spec.capabilities == {"tools"}
    assert spec.fallbacks == ("openai/gpt-4.1-mini", "openai/gpt-5.4-mini")
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd(spec, usage) == pytest.approx(0.40)
    assert [m.id for m in settings.live_models()] == ["vllm/qwen3-32b"]


def test_a_builtin_is_live_when_its_key_variable_is_set() -> None:
    settings = resolve(Config(), env={"OPENAI_API_KEY": "sk-env"})
    assert list(settings.providers) == ["openai"]
    assert settings.providers["openai"].api_key == "sk-env"
    live = {m.id for m in settings.live_models()}
    assert "openai/gpt-4.1-mini" in live
    assert all(model_id.startswith("openai/") for model_id in live)


def test_nothing_is_live_without_keys_or_declarations() -> None:
    settings = resolve(Config(), env={})
    assert settings.providers == {}
    assert settings.live_models() == []


def test_azure_key_alone_does_not_make_azure_live() -> None:
    assert resolve(Config(), env={"AZURE_OPENAI_API_KEY": "az"}).providers == {}


def test_declared_azure_uses_its_base_url_and_api_key_header(tmp_path: Path) -> None:
    text = "providers:\n  azure: {base_url: 'https://acme.openai.azure.com/openai/v1'}\n"
    settings = resolve(_load(tmp_path, text), env={"AZURE_OPENAI_API_KEY": "az-key"})
    live = settings.providers["azure"]
    assert live.spec.base_url == "https://acme.openai.azure.com/openai/v1"
    assert live.headers() == {"api-key": "az-key"}
    assert live.spec.options.max_tokens_field == "max_completion_tokens"


def test_key_precedence_config_then_named_variable_then_usual_variable(tmp_path: Path) -> None:
    env = {"MY_KEY": "from-named-var", "OPENAI_API_KEY": "from-usual-var"}
    inline = "providers:\n  openai: {api_key: inline, api_key_env: MY_KEY}\n"
    named = "providers:\n  openai: {api_key_env: MY_KEY}\n"
    usual = "providers:\n  openai: {api_key_env: UNSET_VAR}\n"
    assert resolve(_load(tmp_path, inline), env=env).providers["openai"].api_key == "inline"
    assert resolve(_load(tmp_path, named), env=env).providers["openai"].api_key == "from-named-var"
    assert resolve(_load(tmp_path, usual), env=env).providers["openai"].api_key == "from-usual-var"


def test_an_empty_key_variable_counts_as_unset() -> None:
    assert resolve(Config(), env={"OPENAI_API_KEY": ""}).providers == {}


def test_a_declared_provider_without_a_key_is_listed_as_missing_its_key(tmp_path: Path) -> None:
    settings = resolve(_load(tmp_path, "providers:\n  anthropic: {}\n"), env={})
    live = settings.providers["anthropic"]
    assert live.api_key is None
    assert live.missing_key
    assert "api_key=<missing>" in repr(live)


def test_api_key_none_means_no_auth(tmp_path: Path) -> None:
    text = "providers:\n  local: {family: openai, base_url: http://127.0.0.1:8000, api_key: none}\n"
    live = resolve(_load(tmp_path, text), env={}).providers["local"]
    assert live.api_key is None
    assert live.spec.auth == "none"
    assert not live.missing_key
    assert live.headers() == {}


def test_a_disabled_provider_is_not_live_even_with_a_key(tmp_path: Path) -> None:
    config = _load(tmp_path, "providers:\n  openai: {enabled: false}\n")
    assert resolve(config, env={"OPENAI_API_KEY": "sk"}).providers == {}


def test_config_headers_and_wire_options_merge_over_the_builtin_row(tmp_path: Path) -> None:
    text = (
        "providers:\n"
        "  anthropic:\n    headers: {anthropic-beta: tools-2025}\n"
        "  openrouter:\n    headers: {X-Title: OmniLLM}\n    stream_usage: false\n"
        "  openai: {max_tokens_field: max_tokens}\n"
    )
    settings = resolve(_load(tmp_path, text), env={})
    assert settings.providers["anthropic"].spec.headers == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2025",
    }
    openrouter = settings.providers["openrouter"].spec
    assert openrouter.headers == {"X-Title": "OmniLLM"}
    assert openrouter.options.stream_usage is False
    assert settings.providers["openai"].spec.options.max_tokens_field == "max_tokens"


def test_a_config_model_overrides_the_catalog_row_with_the_same_id(tmp_path: Path) -> None:
    text = "models:\n  - id: openai/gpt-4.1-mini\n    price: {input: 0.2, output: 0.8}\n"
    settings = resolve(_load(tmp_path, text), env={})
    spec = settings.catalog.get("openai/gpt-4.1-mini")
    assert spec is not None
    assert (spec.price.input, spec.price.output) == (0.2, 0.8)
    assert len(settings.catalog) == len([*resolve(Config(), env={}).catalog])


def test_resolve_checks_a_config_built_in_code() -> None:
    config = Config(providers={"local": ProviderConfig(base_url="http://x")})
    with pytest.raises(ConfigError, match=r"^providers\.local\.family: required"):
        resolve(config, env={})


def test_no_repr_shows_a_key(tmp_path: Path) -> None:
    text = CUSTOM_PROVIDER + "gateway:\n  keys:\n    - {name: team-a, key: gw-secret}\n"
    settings = resolve(_load(tmp_path, text), env={"OPENAI_API_KEY": "sk-env-secret"})
    shown = " ".join(
        [repr(settings), repr(settings.config), *map(repr, settings.providers.values())]
    )
    for secret in ("sk-local-secret", "sk-env-secret", "gw-secret"):
        assert secret not in shown
    assert "api_key=<set>" in repr(settings.providers["vllm"])


def test_a_loaded_config_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[Config] = []
    problems = _checks._problems

    def counted(config: Config) -> Iterator[tuple[str, str]]:
        runs.append(config)
        return problems(config)

    monkeypatch.setattr(_checks, "_problems", counted)
    config = _load(tmp_path, CUSTOM_PROVIDER, OMNI_GATEWAY_PORT="4100")
    resolve(config, env={})
    assert len(runs) == 1
    resolve(msgspec.structs.replace(config, data_dir="elsewhere"), env={})
    assert len(runs) == 2  # a changed copy is another config: checked again
