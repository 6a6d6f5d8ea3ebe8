"""Spawning a workspace through the real hub and the real Docker engine."""

import json

import pytest

pytestmark = pytest.mark.docker


def test_spawned_server_is_ready_and_answers(instance, researcher_token, covid_server):
    status, body = instance.request("GET", "/user/researcher/covid/api/status", researcher_token)
    assert status == 200, body
    assert "started" in json.loads(body)


def test_data_holds_only_this_projects_datasets_and_is_read_only(instance, covid_server):
    code, out = instance.exec_python(covid_server, """
import os
print(sorted(os.listdir('/data')))
for target in ('/data/new.txt', '/data/persons/part-0.parquet', '/data/persons/x'):
    try:
        open(target, 'a').close()
        print('WROTE', target)
    except OSError as exc:
        print('refused', exc.errno)
""")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0] == "['covid_tests', 'persons']"  # not the income project's dataset
    assert all(line.startswith("refused") for line in lines[1:]), out


def test_duckdb_views_over_the_project_data(instance, covid_server):
    code, out = instance.exec_python(covid_server, """
from tw_workspace import connect
con = connect()
print(con.execute('select count(*) from persons').fetchone()[0],
      con.execute('select count(*) from covid_tests where positive').fetchone()[0])
""")
    assert code == 0, out
    assert out.split() == ["500", "100"]


def test_container_limits_and_security_options(instance, covid_server):
    covid_server.reload()
    hc, cfg = covid_server.attrs["HostConfig"], covid_server.attrs["Config"]
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["ReadonlyRootfs"] is True
    assert hc["Privileged"] is False
    assert hc["Memory"] == 1024**3
    assert hc["PidsLimit"] == instance.settings.pids_limit
    assert hc["CpuQuota"] == int(instance.settings.cpu_limit * hc["CpuPeriod"])
    assert cfg["User"] == "1000:1000"
    assert list(hc["NetworkMode"].split()) == [instance.settings.network]
    assert "/tmp" in hc["Tmpfs"] and "noexec" in hc["Tmpfs"]["/tmp"]
    mounts = {m["Destination"]: m for m in covid_server.attrs["Mounts"]}
    assert mounts["/data"]["RW"] is False
    assert mounts["/home/researcher"]["RW"] is True
    # and from inside: not root, no capabilities, no way to gain privileges, root fs read-only
    code, out = instance.exec_python(covid_server, """
import os
print(os.getuid(), os.getgid())
status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)
print(status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip())
try:
    open('/usr/local/evil', 'w')
    print('root fs writable')
except OSError as exc:
    print('root fs refused', exc.errno)
""")
    assert code == 0, out
    ids, caps, rootfs = out.strip().splitlines()
    assert ids == "1000 1000"
    assert caps.split() == ["0000000000000000", "0000000000000000", "1"]
    assert rootfs.startswith("root fs refused")


def test_non_member_cannot_start_a_server_for_the_project(instance):
    token = instance.token("researcher2")
    status, body = instance.request("POST", "/hub/api/users/researcher2/servers/covid", token,
                                    body={"project": "covid"})
    assert status >= 400, (status, body)
    assert b"not a member" in body
    st, b = instance.request("GET", "/hub/api/users/researcher2", token)
    assert "covid" not in json.loads(b)["servers"]
    names = [c.name for c in instance.docker.containers.list(all=True)]
    assert f"{instance.prefix}-researcher2--covid" not in names
    # and a project that does not exist
    status, body = instance.request("POST", "/hub/api/users/researcher2/servers/nope", token,
                                    body={"project": "nope"})
    assert status >= 400 and b"no project named" in body
    # refused starts do not use up the user's quota: their own project still starts
    instance.spawn("researcher2", "income", token)
    instance.stop_server("researcher2", "income", token)


def test_user_cannot_spawn_for_another_user(instance):
    token = instance.token("researcher2")
    status, _ = instance.request("POST", "/hub/api/users/researcher/servers/income", token,
                                 body={"project": "income"})
    assert status in (403, 404)


def test_home_survives_a_server_restart(instance):
    token = instance.token("researcher2")
    instance.spawn("researcher2", "income", token)
    c = instance.container("researcher2", "income")
    code, out = instance.exec_python(c, "open('/home/researcher/notes.md','w').write('kept')")
    assert code == 0, out
    instance.stop_server("researcher2", "income", token)
    instance.spawn("researcher2", "income", token)
    c2 = instance.container("researcher2", "income")
    assert c2.id != c.id  # a new container ...
    code, out = instance.exec_python(c2, "print(open('/home/researcher/notes.md').read())")
    assert out.strip() == "kept"  # ... with the same home
    instance.stop_server("researcher2", "income", token)


def test_homes_are_separate_per_project(instance, researcher_token, covid_server):
    instance.spawn("researcher", "income", researcher_token)
    inc = instance.container("researcher", "income")
    instance.exec_python(covid_server, "open('/home/researcher/covid-only.txt','w').write('x')")
    code, out = instance.exec_python(inc, "import os; print(os.path.exists('/home/researcher/covid-only.txt'))")
    assert out.strip() == "False"
    instance.stop_server("researcher", "income", researcher_token)


def test_hub_restart_keeps_running_servers_reachable(instance, researcher_token, covid_server):
    before = covid_server.id
    from hub.cli import _stop
    _stop(instance.launcher.hub_pid, "hub")
    # while the hub is down, the proxy (its own process) keeps the workspace's route
    import urllib.request
    routes = urllib.request.Request(
        f"http://127.0.0.1:{instance.settings.proxy_api_port}/api/routes",
        headers={"Authorization": "token " + (instance.settings.hub_dir / "proxy-token").read_text()})
    with urllib.request.urlopen(routes) as r:
        assert "/user/researcher/covid" in json.loads(r.read())
    instance.launcher.start_hub()
    status, body = instance.request("GET", "/hub/api/users/researcher", researcher_token)
    assert status == 200 and json.loads(body)["servers"]["covid"]["ready"] is True
    status, _ = instance.request("GET", "/user/researcher/covid/api/status", researcher_token)
    assert status == 200
    assert instance.container("researcher", "covid").id == before
    # the hub's managed services came back with it, once each
    st, _ = instance.airlock("GET", "api/requests", researcher_token)
    assert st == 200
    import psutil
    hub = psutil.Process(int(instance.launcher.hub_pid.read_text()))
    children = [" ".join(p.cmdline()) for p in hub.children(recursive=True)]
    assert sum("hub.airlock.service" in c for c in children) == 1, children
    assert sum("jupyterhub_idle_culler" in c for c in children) == 1, children
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if "hub.airlock.service" in " ".join(p.info["cmdline"] or [])
                 and str(instance.home) in " ".join(p.environ().get(k, "") for k in
                                                    ("WORKSPACE_HOME",))]
    assert len(leftovers) == 1, "an airlock of the stopped hub is still running"
