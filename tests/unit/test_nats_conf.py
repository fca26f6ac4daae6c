"""``nats.conf`` and the embedded server's config: one permission table, valid files,
no secret in either; the checks on ``nats.users``; logins and URLs without secrets."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from omnillm import _nats_conf
from omnillm.bus import subjects
from omnillm.bus._login import NatsAuthFailed, login, redact
from omnillm.config import NatsUser, load_config
from omnillm.embedded import EmbeddedNats, find_nats_server, render_config
from omnillm.errors import ConfigError

NATS_CONF = Path(__file__).parents[2] / "nats.conf"
DUMMY = {"OMNI_ACTOR_PASSWORD": "a", "OMNI_AUDIT_PASSWORD": "b", "OMNI_ACME_PASSWORD": "c"}


def check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nats-server -t``: parse and validate the file, start nothing."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    return subprocess.run(
        [find_nats_server(), "-t", "-c", str(path)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def blocks(text: str) -> list[str]:
    """The rendered permission blocks: each from ``OMNI_X = `` to its closing line."""
    return re.findall(r"^OMNI_[A-Z_]+ = .*?^[}\]]$", text, flags=re.M | re.S)


# --- nats.conf -------------------------------------------------------------------------


def test_nats_conf_carries_the_rendered_permission_table_verbatim() -> None:
    text = NATS_CONF.read_text()
    assert _nats_conf.render_permissions() in text, (
        "nats.conf is out of step with omnillm/_nats_conf.py: paste render_permissions()"
    )
    for line in (
        _nats_conf.render_user("omnillm-actor", "OMNI_ACTOR_PASSWORD", "actor"),
        _nats_conf.render_user("audit", "OMNI_AUDIT_PASSWORD", "audit"),
        _nats_conf.render_user("acme", "OMNI_ACME_PASSWORD", "client", "_INBOX.acme"),
    ):
        assert f"    {line}\n" in text


def test_nats_conf_is_a_valid_server_config() -> None:
    result = check(NATS_CONF, DUMMY)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stderr


def test_nats_conf_holds_no_password_only_variables() -> None:
    result = check(NATS_CONF, {})
    assert result.returncode != 0
    assert "variable reference for 'OMNI_ACTOR_PASSWORD'" in result.stderr
    passwords = re.findall(r"password: (\S+?)[,}]", NATS_CONF.read_text())
    assert passwords
    assert all(p.startswith("$OMNI_") for p in passwords)


def test_nats_conf_raises_max_payload_and_max_pending_with_it() -> None:
    text = NATS_CONF.read_text()
    assert re.search(r"^max_payload: 8MB$", text, flags=re.M)
    assert re.search(r"^max_pending: 64MB$", text, flags=re.M)
    assert "no_auth_user" not in re.sub(r"#.*", "", text)


def test_the_commented_out_cluster_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = NATS_CONF.read_text()
    start = text.index("# cluster {")
    end = text.index("# }", start) + len("# }")
    block = re.sub(r"^# ?", "", text[start:end], flags=re.M)
    (tmp_path / "clustered.conf").write_text(text[:start] + block + text[end:])
    result = check(tmp_path / "clustered.conf", DUMMY)
    assert result.returncode == 0, result.stderr
    assert "name: omni" in block
    assert block.count("nats-route://") == 3


# --- the embedded config ---------------------------------------------------------------


def embedded(tmp_path: Path, **options: object) -> str:
    return render_config(
        host="127.0.0.1",
        port=0,
        store_dir=tmp_path / "js",
        max_payload=8 * 1024 * 1024,
        **options,  # type: ignore[arg-type]
    )


def test_the_embedded_config_has_nats_conf_permissions_and_is_valid(tmp_path: Path) -> None:
    users = [
        NatsUser(name="acme", password_env="ACME_PW"),
        NatsUser(name="ops", password_env="OPS_PW", role="audit"),
    ]
    text = embedded(tmp_path, users=users)
    assert blocks(text) == blocks(NATS_CONF.read_text())
    assert '{user: "acme", password: $ACME_PW, ' in text
    assert 'subscribe: "_INBOX.acme.>"' in text
    (tmp_path / "embedded.conf").write_text(text)
    env = {"OMNI_ACTOR_PASSWORD": "a", "OMNI_LOCAL_PASSWORD": "b", "ACME_PW": "c", "OPS_PW": "d"}
    result = check(tmp_path / "embedded.conf", env)
    assert result.returncode == 0, result.stderr


def test_the_embedded_default_maps_logins_without_credentials_to_an_unlimited_user(
    tmp_path: Path,
) -> None:
    text = embedded(tmp_path)
    assert 'no_auth_user: "omnillm-local"' in text
    assert '{user: "omnillm-local", password: $OMNI_LOCAL_PASSWORD}' in text
    assert blocks(text) == blocks(_nats_conf.render_permissions({"actor"}))
    strict = embedded(tmp_path, anonymous=False)
    assert "no_auth_user" not in strict
    assert "omnillm-local" not in strict


def test_the_embedded_config_keeps_jetstream_last_and_writes_no_password(tmp_path: Path) -> None:
    """Tests cut the config at "jetstream" for a server without it: the rest must stand."""
    text = embedded(tmp_path, users=[NatsUser(name="acme", password_env="ACME_PW")])
    assert text.count("jetstream") == 1
    assert text.index("no_auth_user") < text.index("jetstream {")
    assert not re.search(r"password: [^$]", text)


def test_users_on_an_embedded_server_open_to_the_network_are_refused(tmp_path: Path) -> None:
    server = EmbeddedNats(
        tmp_path, host="0.0.0.0", users=[NatsUser(name="acme", password_env="ACME_PW")]
    )
    with pytest.raises(ConfigError, match="users would limit nothing"):
        server.start()
    assert server.process is None


def test_a_users_password_variable_must_be_set_before_the_server_starts(tmp_path: Path) -> None:
    server = EmbeddedNats(
        tmp_path, port=0, users=[NatsUser(name="acme", password_env="NOT_SET_ACME_PW")], env={}
    )
    with pytest.raises(ConfigError, match=r"nats.users\[0\].password_env: NOT_SET_ACME_PW"):
        server.start()
    assert server.process is None


# --- nats.users in the config ----------------------------------------------------------


def config_error(tmp_path: Path, users: str) -> str:
    (tmp_path / "omnillm.yaml").write_text(f"nats:\n  users: {users}\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "omnillm.yaml", env={})
    return str(error.value).split(": ", 1)[1]


def test_nats_users_load_with_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "omnillm.yaml").write_text(
        "nats:\n  users:\n    - {name: acme, password_env: ACME_PW}\n"
        "    - {name: ops, password_env: OPS_PW, role: audit}\n"
    )
    acme, ops = load_config(tmp_path / "omnillm.yaml", env={}).nats.users
    assert (acme.role, _nats_conf.inbox_prefix_of(acme)) == ("client", "_INBOX.acme")
    assert ops.role == "audit"


@pytest.mark.parametrize(
    ("users", "problem"),
    [
        ("[{name: a.b, password_env: X}]", "nats.users[0].name: expected letters, digits"),
        ("[{name: omnillm-actor, password_env: X}]", "is OmniLLM's own user"),
        ("[{name: a, password_env: X}, {name: a, password_env: Y}]", "already nats.users[0]"),
        ("[{name: a, password_env: 'my pw'}]", "password_env: expected a variable name"),
        ("[{name: a, password_env: X, inbox_prefix: my.inbox}]", "expected a subject under"),
        ("[{name: a, password_env: X, inbox_prefix: _INBOX}]", "expected a subject under"),
        (
            "[{name: a, password_env: X}, {name: b, password_env: Y, inbox_prefix: _INBOX.a.b}]",
            "nats.users[1].inbox_prefix: '_INBOX.a.b' overlaps nats.users[0]'s '_INBOX.a'",
        ),
        (
            "[{name: a, password_env: X, inbox_prefix: _INBOX.omnillm-actor}]",
            "nats.users[0].inbox_prefix: '_INBOX.omnillm-actor' overlaps omnillm-actor's inboxes",
        ),
        ("[{name: a, password_env: X, role: admin}]", "nats.users[0].role"),
    ],
)
def test_nats_users_that_would_leak_or_not_work_fail_at_load(
    tmp_path: Path, users: str, problem: str
) -> None:
    assert problem in config_error(tmp_path, users)


# --- logins and URLs -------------------------------------------------------------------


def test_a_login_takes_arguments_then_the_url_then_the_environment() -> None:
    env = {"OMNI_NATS_USER": "env-user", "OMNI_NATS_PASSWORD": "env-pw"}
    url = "nats://127.0.0.1:4222"
    given = login(url, user="acme", password="pw", inbox_prefix=None, env=env)
    assert (given.user, given.password, given.inbox_prefix) == ("acme", "pw", "_INBOX.acme")
    in_url = login("nats://u:p@h:4222", user=None, password=None, inbox_prefix=None, env=env)
    assert (in_url.user, in_url.inbox_prefix, in_url.shown_user) == (None, "_INBOX.u", "u")
    from_env = login(url, user=None, password=None, inbox_prefix=None, env=env)
    assert (from_env.user, from_env.password) == ("env-user", "env-pw")
    nobody = login(url, user=None, password=None, inbox_prefix=None, env={})
    assert (nobody.user, nobody.inbox_prefix) == (None, "_INBOX")
    chosen = {"OMNI_NATS_INBOX_PREFIX": "_INBOX.team"}
    assert login(url, user="a", password="p", inbox_prefix=None, env=chosen).inbox_prefix == (
        "_INBOX.team"
    )
    assert "pw" not in repr(given)


def test_a_user_without_a_password_is_refused_before_connecting() -> None:
    with pytest.raises(NatsAuthFailed, match="set OMNI_NATS_PASSWORD"):
        login("nats://h:4222", user="acme", password=None, inbox_prefix=None, env={})


def test_a_token_in_a_url_never_becomes_an_inbox_name() -> None:
    token = login("nats://s3cret@h:4222", user=None, password=None, inbox_prefix=None, env={})
    assert token.inbox_prefix == "_INBOX"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://acme:pw@h:4222", "nats://acme:***@h:4222"),
        ("nats://t0ken@h:4222", "nats://***@h:4222"),
        ("tls://a:p@x:1, nats://b:q@y:2", "tls://a:***@x:1,nats://b:***@y:2"),
        ("acme:pw@h:4222", "acme:***@h:4222"),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("reply", "answered"),
    [
        ("_INBOX.acme.AbC123.rid", True),
        ("_INBOX.x", True),
        ("", False),
        ("_INBOX", False),
        ("_INBOX.>", False),
        ("_INBOX.acme.*", False),
        ("_INBOX..x", False),
        ("$JS.API.STREAM.DELETE.OMNI_USAGE", False),
        ("$KV.omni_config.switch", False),
        ("omni.v1.call.openai", False),
        ("_INBOXES.x", False),
    ],
)
def test_the_router_answers_only_concrete_subjects_under_inbox(reply: str, answered: bool) -> None:
    assert subjects.is_inbox(reply) is answered
