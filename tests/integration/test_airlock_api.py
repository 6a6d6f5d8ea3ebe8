"""The airlock end to end through its API: from a running workspace, with the real hub."""

import base64
import hashlib
import json

import pytest

pytestmark = pytest.mark.docker

SUBMIT_FROM_WORKSPACE = """
import sdc, json
from tw_workspace import connect, airlock
con = connect()
t = sdc.table("SELECT person_id, sex FROM persons WHERE person_id < 300", rows=["sex"],
              unit="person_id", con=con)
req = airlock.new_request("Persons by sex")
req.add_table(t, name="persons_by_sex", description="Number of persons by sex")
req.submit()
print(json.dumps({"id": req.id, "state": req.state}))
"""


@pytest.fixture(scope="module")
def submitted(instance, covid_server):
    code, out = instance.exec_python(covid_server, SUBMIT_FROM_WORKSPACE)
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_a_table_submitted_from_the_workspace_is_recomputed(instance, submitted,
                                                            researcher_token):
    assert submitted["state"] == "submitted"
    st, r = instance.airlock("GET", f"api/requests/{submitted['id']}", researcher_token)
    assert st == 200
    out = r["outputs"][0]
    assert out["verified"] is True and out["kind"] == "table"
    assert out["diff"]["same"] is True, out["diff"]  # the preview matches the recomputation
    files = {f["name"]: f for f in out["files"]}
    assert set(files) == {"table.csv", "table.json"}
    total = next(c for c in out["evidence"]["cells"] if c["key"] == {"sex": "Total"})
    assert total["value"] == 300 and total["n_units"] == 300
    st, csv = instance.airlock("GET", f"requests/{submitted['id']}/files/persons_by_sex/table.csv",
                               researcher_token)
    assert st == 200 and hashlib.sha256(csv).hexdigest() == files["table.csv"]["sha256"]
    assert csv.decode().splitlines()[0].startswith("sex")


def test_a_tampered_preview_cannot_change_what_is_released(instance, researcher_token):
    st, req = instance.airlock("POST", "api/requests", researcher_token,
                               {"project": "covid", "title": "tampered"})
    assert st == 201
    spec = {"kind": "table", "source": {"sql": "SELECT * FROM persons"}, "rows": ["sex"],
            "stat": "count", "version": 1}
    fake = {"dimensions": ["sex"], "stat": "count", "policy": {"name": "acro"},
            "cells": [{"key": {"sex": "Total"}, "value": 999999, "status": "safe"}]}
    st, out = instance.airlock("POST", f"api/requests/{req['id']}/outputs", researcher_token,
                               {"name": "t", "kind": "table", "spec": spec, "preview": fake,
                                "description": "all persons by sex"})
    assert st == 201, out
    assert out["diff"]["same"] is False and out["diff"]["count"] >= 1
    csv = next(f for f in out["files"] if f["name"] == "table.csv")
    st, r = instance.airlock("GET", f"api/requests/{req['id']}", researcher_token)
    total = next(c for c in r["outputs"][0]["evidence"]["cells"]
                 if c["key"] == {"sex": "Total"})
    assert total["value"] == 500  # the airlock's own count of the 500 test persons
    st, released = instance.airlock("GET", f"requests/{req['id']}/files/t/table.csv",
                                    researcher_token)
    assert st == 200 and hashlib.sha256(released).hexdigest() == csv["sha256"]
    assert b"999999" not in released and b"Total,500" in released


@pytest.mark.parametrize("sql, message", [
    ("SELECT * FROM persons; DROP VIEW persons", "exactly one SELECT"),
    ("COPY persons TO '/data/x.csv'", "only a SELECT"),
    ("SELECT * FROM read_parquet('/etc/passwd')", "Permission Error"),
])
def test_sandbox_refusals_reach_the_researcher_as_a_clear_error(instance, covid_server, sql,
                                                                 message):
    code, out = instance.exec_python(covid_server, f"""
from tw_workspace import airlock
req = airlock.new_request("bad query")
spec = {{"source": {{"sql": {sql!r}}}, "rows": ["sex"], "stat": "count", "version": 1}}
class T:  # what sdc.table returns, as far as the client looks
    spec = spec
    def to_json(self): return {{}}
try:
    req.add_table(T(), name="x", description="x")
except airlock.AirlockError as exc:
    print("REFUSED", exc)
""")
    assert "REFUSED" in out and message in out, out


def test_free_files_are_unverified_and_limited(instance, researcher_token):
    st, req = instance.airlock("POST", "api/requests", researcher_token,
                               {"project": "covid", "title": "files"})
    ok = {"name": "notes", "kind": "file", "filename": "notes.md", "description": "method notes",
          "content_b64": base64.b64encode(b"# Method\n").decode()}
    st, out = instance.airlock("POST", f"api/requests/{req['id']}/outputs", researcher_token, ok)
    assert st == 201 and out["verified"] is False
    assert out["files"][0]["sha256"] == hashlib.sha256(b"# Method\n").hexdigest()
    for bad in [dict(ok, name="exe", filename="tool.exe"),
                dict(ok, name="big", filename="big.csv",
                     content_b64=base64.b64encode(b"a" * (11 * 1024 * 1024)).decode())]:
        st, out = instance.airlock("POST", f"api/requests/{req['id']}/outputs",
                                   researcher_token, bad)
        assert st == 400, (st, out)
        assert "not allowed" in out["error"] or "too large" in out["error"]


def test_a_non_member_sees_nothing_of_another_projects_requests(instance, submitted):
    token = instance.token("researcher2")  # member of income only
    st, body = instance.airlock("GET", f"api/requests/{submitted['id']}", token)
    assert st == 404
    st, body = instance.airlock("GET", "api/requests", token)
    assert st == 200 and all(r["project"] != "covid" for r in body["requests"])
    st, body = instance.airlock("POST", "api/requests", token,
                                {"project": "covid", "title": "sneaky"})
    assert st in (403, 404)


def test_the_author_cannot_review_their_own_request(instance, submitted, researcher_token):
    st, body = instance.airlock("POST", f"requests/{submitted['id']}/vote", researcher_token)
    assert st in (403, 404, 405)


def test_requests_without_a_token_are_refused(instance):
    import urllib.error
    import urllib.request
    url = f"{instance.settings.airlock_url}/services/airlock/api/requests"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 403


FIGURE_AND_MODEL = """
import sdc, json, hashlib
from tw_workspace import connect, airlock
con = connect()
fig = sdc.figure("SELECT person_id, age FROM persons", "histogram", x="age", unit="person_id",
                 con=con)
mod = sdc.model("SELECT person_id, age, sex FROM persons", "age ~ C(sex)", unit="person_id",
                con=con)
req = airlock.new_request("Age")
req.add(fig, name="age_hist", description="Age distribution")
req.add(mod, name="age_model", description="Age by sex")
local = {name: hashlib.sha256(data).hexdigest()
         for obj in (fig, mod) for name, data in obj.files().items()}
print(json.dumps({"id": req.id, "local": local}))
"""


def test_figures_and_models_are_recomputed_to_the_same_bytes(instance, covid_server,
                                                            researcher_token):
    code, out = instance.exec_python(covid_server, FIGURE_AND_MODEL)
    assert code == 0, out
    got = json.loads(out.strip().splitlines()[-1])
    st, r = instance.airlock("GET", f"api/requests/{got['id']}", researcher_token)
    outputs = {o["name"]: o for o in r["outputs"]}
    assert outputs["age_hist"]["kind"] == "figure" and outputs["age_hist"]["verified"]
    assert outputs["age_model"]["kind"] == "model" and outputs["age_model"]["verified"]
    remote = {f["name"]: f["sha256"] for o in r["outputs"] for f in o["files"]}
    assert any(n.endswith(".png") for n in remote)
    # the airlock's own drawing and fit are byte for byte what the notebook previewed
    assert remote == got["local"]
