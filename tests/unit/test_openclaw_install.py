"""``omni openclaw install|uninstall`` on realistic OpenClaw configs (JSON5, hand-edited)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import json5
import pytest

from omnillm import openclaw
from omnillm.config import AliasConfig, Config, GatewayConfig, GatewayKey, RoutingConfig, resolve
from omnillm.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openclaw"
URL = "http://127.0.0.1:4000/v1"
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-test", "OPENAI_API_KEY": "sk-test"}
ALIASES = ["auto", "fast", "cheap", "smart", "free", "vision"]


def _settings(config: Config | None = None) -> Any:
    return resolve(config or Config(), env=KEYS)


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(FIXTURES / name, tmp_path / "openclaw.json"))


def _install(path: Path, **options: Any) -> openclaw.Change:
    settings = options.pop("settings", None) or _settings()
    return openclaw.install(settings, path=path, gateway_url=URL, **options)


def _without_omnillm(data: dict[str, Any]) -> dict[str, Any]:
    """The config with every OmniLLM entry and the default model taken out."""
    data = json5.loads(json5.dumps(data))
    data.get("models", {}).get("providers", {}).pop("omnillm", None)
    defaults = data.get("agents", {}).get("defaults", {})
    for ref in [r for r in defaults.get("models", {}) if r.startswith("omnillm/")]:
        del defaults["models"][ref]
    if isinstance(defaults.get("model"), dict):
        defaults["model"].pop("primary", None)
    return _pruned(data)


def _pruned(data: dict[str, Any]) -> dict[str, Any]:
    """Empty objects dropped: install creates ``models: {providers: {}}`` when missing."""
    kept = {k: _pruned(v) if isinstance(v, dict) else v for k, v in data.items()}
    return {k: v for k, v in kept.items() if v != {}}


@pytest.mark.parametrize("name", ["personal.json5", "plain_json.json5", "minimal_comments.json5"])
def test_install_twice_adds_one_provider_and_keeps_the_users_config(
    tmp_path: Path, name: str
) -> None:
    path = _copy(tmp_path, name)
    original = path.read_text()
    first = _install(path)
    second = _install(path)
    after = json5.loads(path.read_text())
    assert first.changed and not second.changed
    assert "nothing to change" in str(second)
    assert after["models"]["providers"]["omnillm"]["baseUrl"] == URL
    assert [m["id"] for m in after["models"]["providers"]["omnillm"]["models"]] == ALIASES
    assert path.read_text().count("omnillm: {") + path.read_text().count('"omnillm": {') == 1
    assert _without_omnillm(after) == _without_omnillm(json5.loads(original))
    for comment in re.findall(r"//[^\n]*|/\*.*?\*/", original):
        assert comment in path.read_text()


def test_the_users_providers_aliases_and_default_survive(tmp_path: Path) -> None:
    path = _copy(tmp_path, "personal.json5")
    _install(path)
    data = json5.loads(path.read_text())
    defaults = data["agents"]["defaults"]
    assert set(data["models"]["providers"]) == {"ollama", "omnillm"}
    assert defaults["model"]["primary"] == "anthropic/claude-opus-4-6"
    assert defaults["models"]["anthropic/claude-haiku-4-5"] == {"alias": "fast"}
    assert defaults["models"]["omnillm/fast"] == {}  # "fast" is the user's alias already
    assert defaults["models"]["omnillm/smart"] == {"alias": "smart"}


def test_models_carry_limits_modalities_and_prices(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    _install(path)
    rows = {
        m["id"]: m
        for m in json5.loads(path.read_text())["models"]["providers"]["omnillm"]["models"]
    }
    assert rows["vision"]["input"] == ["text", "image"]
    assert rows["auto"]["contextWindow"] >= 128_000 and rows["auto"]["maxTokens"] > 0
    assert set(rows["auto"]["cost"]) == {"input", "output", "cacheRead", "cacheWrite"}
    assert rows["smart"]["cost"]["output"] >= rows["cheap"]["cost"]["output"]


def test_config_aliases_become_models(tmp_path: Path) -> None:
    routing = RoutingConfig(
        aliases={"coder": AliasConfig(tier="complex"), "mine": ["openai/gpt-4o-mini"]}
    )
    path = tmp_path / "openclaw.json"
    _install(path, settings=_settings(Config(routing=routing)))
    data = json5.loads(path.read_text())
    assert [m["id"] for m in data["models"]["providers"]["omnillm"]["models"]][-2:] == [
        "coder",
        "mine",
    ]
    assert "omnillm/coder" in data["agents"]["defaults"]["models"]


def test_no_secret_is_written_only_an_env_reference(tmp_path: Path) -> None:
    keys = GatewayConfig(keys=[GatewayKey(name="claw", key="s3cret-gateway-key")])
    path = tmp_path / "openclaw.json"
    change = _install(path, settings=_settings(Config(gateway=keys)))
    text = path.read_text()
    assert "s3cret" not in text and "sk-ant-test" not in text
    assert json5.loads(text)["models"]["providers"]["omnillm"]["apiKey"] == "${OMNILLM_API_KEY}"
    assert "OMNILLM_API_KEY" in str(change)


def test_api_key_env_is_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    _install(path, api_key_env="MY_ROUTER_KEY")
    assert (
        json5.loads(path.read_text())["models"]["providers"]["omnillm"]["apiKey"]
        == "${MY_ROUTER_KEY}"
    )


def test_an_open_gateway_gets_a_placeholder_key(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    _install(path)
    apikey = json5.loads(path.read_text())["models"]["providers"]["omnillm"]["apiKey"]
    assert apikey == openclaw.OPEN_GATEWAY_KEY


def test_dry_run_writes_nothing_and_shows_the_diff(tmp_path: Path) -> None:
    path = _copy(tmp_path, "personal.json5")
    original = path.read_text()
    change = _install(path, dry_run=True, set_default=True)
    assert path.read_text() == original
    assert list(tmp_path.iterdir()) == [path]  # no backup either
    assert change.diff.startswith(f"--- {path}")
    assert '+        primary: "omnillm/auto"' in change.diff
    assert "Would change" in str(change)


def test_install_keeps_a_backup_of_the_previous_text(tmp_path: Path) -> None:
    path = _copy(tmp_path, "personal.json5")
    original = path.read_text()
    change = _install(path)
    assert change.backup is not None and change.backup.name.startswith("openclaw.json.bak-")
    assert change.backup.read_text() == original


@pytest.mark.parametrize("name", ["personal.json5", "plain_json.json5", "minimal_comments.json5"])
def test_uninstall_after_install_gives_back_the_original_bytes(tmp_path: Path, name: str) -> None:
    path = _copy(tmp_path, name)
    original = path.read_text()
    _install(path, set_default=True)
    change = openclaw.uninstall(path)
    assert change.changed
    assert path.read_text() == original
    assert not openclaw.uninstall(path).changed


@pytest.mark.parametrize(
    ("name", "previous"),
    [
        ("personal.json5", "anthropic/claude-opus-4-6"),
        ("plain_json.json5", "anthropic/claude-sonnet-4-5"),
    ],
)
def test_set_default_makes_auto_the_default_and_uninstall_restores_the_old_one(
    tmp_path: Path, name: str, previous: str
) -> None:
    path = _copy(tmp_path, name)
    change = _install(path, set_default=True)
    model = json5.loads(path.read_text())["agents"]["defaults"]["model"]
    assert (model["primary"] if isinstance(model, dict) else model) == "omnillm/auto"
    assert previous in str(change)
    openclaw.uninstall(path)
    model = json5.loads(path.read_text())["agents"]["defaults"]["model"]
    assert (model["primary"] if isinstance(model, dict) else model) == previous


def test_uninstall_leaves_a_default_the_user_changed_since(tmp_path: Path) -> None:
    path = _copy(tmp_path, "personal.json5")
    _install(path, set_default=True)
    text = path.read_text().replace(
        '"omnillm/auto" /* omnillm-was: "anthropic/claude-opus-4-6" */', '"openai/gpt-5"'
    )
    path.write_text(text)
    openclaw.uninstall(path)
    data = json5.loads(path.read_text())
    assert data["agents"]["defaults"]["model"]["primary"] == "openai/gpt-5"
    assert "omnillm" not in data["models"]["providers"]


def test_a_missing_file_is_created_and_uninstall_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "openclaw.json"
    change = _install(path, set_default=True)
    data = json5.loads(path.read_text())
    assert change.backup is None and change.before is None
    assert data["agents"]["defaults"]["model"]["primary"] == "omnillm/auto"
    assert "omnillm/vision" in data["agents"]["defaults"]["models"]
    openclaw.uninstall(path)
    assert json5.loads(path.read_text()) == {}


def test_a_malformed_file_is_reported_with_its_position_and_left_alone(tmp_path: Path) -> None:
    path = _copy(tmp_path, "malformed.json5")
    original = path.read_text()
    with pytest.raises(ConfigError) as caught:
        _install(path)
    assert str(path) in caught.value.message
    assert "line 5, column 7" in caught.value.message
    assert path.read_text() == original
    assert list(tmp_path.iterdir()) == [path]


def test_an_empty_provider_map_the_user_wrote_is_removed_on_uninstall(tmp_path: Path) -> None:
    """A known limit: ``providers: {}`` means the same as no entry and is not kept."""
    path = tmp_path / "openclaw.json"
    path.write_text("{\n  models: {\n    providers: {},\n  },\n  tools: {},\n}\n")
    _install(path)
    openclaw.uninstall(path)
    assert json5.loads(path.read_text()) == {"tools": {}}


def test_config_path_follows_openclaws_precedence(tmp_path: Path) -> None:
    env = {"OPENCLAW_CONFIG_PATH": "/etc/claw.json", "OPENCLAW_STATE_DIR": "/srv/claw"}
    assert openclaw.config_path(env) == Path("/etc/claw.json")
    assert openclaw.config_path({"OPENCLAW_STATE_DIR": "/srv/claw"}) == Path(
        "/srv/claw/openclaw.json"
    )
    assert openclaw.config_path({}) == Path.home() / ".openclaw" / "openclaw.json"


def test_gateway_url_from_config() -> None:
    assert openclaw.gateway_url(Config()) == URL
    wildcard = Config(gateway=GatewayConfig(host="0.0.0.0", port=8080))
    assert openclaw.gateway_url(wildcard) == "http://127.0.0.1:8080/v1"


def test_gateway_on_a_port_picked_at_start_is_refused_with_the_way_out() -> None:
    free_port = Config(gateway=GatewayConfig(port=0))
    with pytest.raises(ConfigError, match="--gateway-url"):
        openclaw.gateway_url(free_port)
