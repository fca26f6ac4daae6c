"""docker-compose.yml, the Dockerfile and deploy/omnillm.yaml agree with each other and with omni.

Without a Docker engine: the compose file is read as YAML and every reference in it is
checked against what exists (files, volumes, commands omni accepts, providers the config
declares). Where the compose plugin is installed, ``docker compose config`` checks it too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from omnillm.cli import _parser
from omnillm.config import load_config, resolve
from omnillm.supervisor import ACTOR_KINDS

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "OMNI_ACTOR_PASSWORD": "actor-secret",
    "OMNI_AUDIT_PASSWORD": "audit-secret",
    "OMNI_ACME_PASSWORD": "acme-secret",
    "OMNI_GATEWAY_KEY": "gateway-secret",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def actors() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if "build" in s}


def entrypoint() -> list[str]:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            words: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
            return words
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def config_path() -> str:
    words = entrypoint()
    return words[words.index("--config") + 1]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of each short-form volume."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def deploy_config() -> Any:
    return load_config(ROOT / "deploy" / "omnillm.yaml", env={})


def test_every_actor_kind_runs_as_a_service_from_the_one_image() -> None:
    kinds = {s["command"][1] for s in actors().values()}
    assert kinds == set(ACTOR_KINDS)
    assert {str(s["build"]) for s in actors().values()} == {"."}
    assert (ROOT / "Dockerfile").is_file()
    assert entrypoint()[0] == "omni"


@pytest.mark.parametrize("name", sorted(actors()))
def test_each_actor_command_is_one_omni_accepts(name: str) -> None:
    args = _parser().parse_args([*entrypoint()[1:], *services()[name]["command"]])
    assert args.command == "actor"
    assert args.config == config_path()


def test_one_caller_service_per_declared_provider_each_scaled_out() -> None:
    declared = set(deploy_config().providers)
    callers = {n: s for n, s in actors().items() if s["command"][1] == "caller"}
    served = {s["command"][s["command"].index("--provider") + 1] for s in callers.values()}
    assert served == declared
    assert all(s["deploy"]["replicas"] >= 2 for s in callers.values())


def test_every_actor_mounts_the_config_the_image_reads() -> None:
    for name, service in actors().items():
        source = mounts(service).get(config_path())
        assert source is not None, f"{name} does not mount {config_path()}"
        assert (ROOT / source).resolve() == ROOT / "deploy" / "omnillm.yaml"


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for source in mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_the_ledger_keeps_its_file_on_a_volume() -> None:
    path = Path(deploy_config().ledger.path)
    ledger = services()["ledger"]
    on_volumes = [t for t, s in mounts(ledger).items() if not s.startswith(".")]
    assert any(path.is_relative_to(target) for target in on_volumes), on_volumes


def test_the_gateway_listens_where_its_port_is_published_and_requires_a_key() -> None:
    config = deploy_config()
    gateway = services()["gateway"]
    assert f"{config.gateway.port}:{config.gateway.port}" in gateway["ports"]
    assert config.gateway.host == "0.0.0.0"
    assert [key.key_env for key in config.gateway.keys] == ["OMNI_GATEWAY_KEY"]
    assert "OMNI_GATEWAY_KEY" in gateway["environment"]


def test_the_config_resolves_with_the_providers_live() -> None:
    settings = resolve(deploy_config(), env={})
    assert sorted(settings.providers) == ["anthropic", "openai"]
    assert settings.config.nats.replicas == "auto"


def test_nats_runs_nats_conf_with_every_password_it_reads() -> None:
    nats = services()["nats"]
    conf_target = nats["command"][nats["command"].index("-c") + 1]
    assert (ROOT / mounts(nats)[conf_target]).resolve() == ROOT / "nats.conf"
    text = (ROOT / "nats.conf").read_text()
    uncommented = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    variables = set(re.findall(r"password:\s*\$([A-Z][A-Z0-9_]*)", uncommented))
    assert variables, "nats.conf reads no password from the environment"
    assert variables <= set(nats["environment"]), variables - set(nats["environment"])
    store = re.search(r'store_dir:\s*"?([^"\s]+)', uncommented)
    assert store is not None
    assert any(Path(store[1]).is_relative_to(t) for t in mounts(nats)), "JetStream not on a volume"


def test_actors_log_in_as_the_actor_user_nats_conf_declares() -> None:
    text = (ROOT / "nats.conf").read_text()
    for name, service in actors().items():
        env = service["environment"]
        assert f'user: "{env["OMNI_NATS_USER"]}"' in text, name
        assert env["OMNI_NATS_PASSWORD"].startswith("${OMNI_ACTOR_PASSWORD"), name
        assert env["OMNI_NATS_URL"] == "nats://nats:4222", name
