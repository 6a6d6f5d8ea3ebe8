import pytest

from hub.config import CUSTOM_SCOPES, roles
from hub.netsetup import firewall_rules
from hub.settings import Settings


def test_defaults_and_gateway():
    s = Settings.from_env({"WORKSPACE_HOME": "/tmp/x"})
    assert s.gateway == "172.29.0.1"
    assert s.public_ip == "127.0.0.1" and s.auth == "demo"
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("jupyterhub.sqlite")
    assert s.admins == ("admin",) and s.data_managers == ("datamanager",)


def test_env_round_trip():
    env = {"WORKSPACE_HOME": "/tmp/x", "WORKSPACE_PREFIX": "tt", "WORKSPACE_SUBNET": "10.9.0.0/24",
           "WORKSPACE_OPEN_PORTS": "9000, 9001", "WORKSPACE_AUTH": "native",
           "WORKSPACE_IP": "0.0.0.0", "WORKSPACE_ADMINS": "ops"}
    s = Settings.from_env(env)
    assert s.open_ports == (9000, 9001) and s.network == "tt-internal" and s.bridge == "tt-int0"
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize("env, message", [
    ({"WORKSPACE_IP": "0.0.0.0"}, "demo accounts exist only on 127.0.0.1"),
    ({"WORKSPACE_AUTH": "ldap"}, "WORKSPACE_AUTH"),
    ({"WORKSPACE_SUBNET": "10.0.0.0/30"}, "too small"),
    ({"WORKSPACE_SUBNET": "not-a-net"}, "does not appear"),
])
def test_bad_settings(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"WORKSPACE_HOME": "/tmp/x", **env})


def test_firewall_allows_only_replies_and_the_hub_port():
    s = Settings.from_env({"WORKSPACE_HOME": "/tmp/x", "WORKSPACE_OPEN_PORTS": "9100"})
    rules = firewall_rules(s)
    assert rules[0][-1] == "ACCEPT" and "ESTABLISHED,RELATED" in rules[0]
    accepted = [r for r in rules if r[-1] == "ACCEPT" and "--dport" in r]
    assert [r[r.index("--dport") + 1] for r in accepted] == ["8081", "8082", "9100"]
    assert all(r[r.index("-d") + 1] == s.gateway for r in accepted)
    assert rules[-1][:2] == ["-j", "REJECT"]  # everything else


def test_roles_and_scopes():
    s = Settings.from_env({"WORKSPACE_HOME": "/tmp/x"})
    r = {x["name"]: x for x in roles(s, {"ann"}, {"cas"})}
    assert r["researcher"]["users"] == ["ann"] and "custom:airlock:request" in r["researcher"]["scopes"]
    assert r["checker"]["users"] == ["cas"] and "custom:airlock:review" in r["checker"]["scopes"]
    assert "custom:airlock:review" not in r["researcher"]["scopes"]
    assert r["data-manager"]["users"] == ["datamanager"]
    for role in r.values():
        for scope in role["scopes"]:
            if scope.startswith("custom:"):
                assert scope in CUSTOM_SCOPES
