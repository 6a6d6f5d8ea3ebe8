"""The whole way out, in a real browser: a researcher submits from a running workspace, two
checkers review blind to each other, one releases, the researcher downloads exactly the
approved bytes."""

import hashlib
import io
import json
import zipfile

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.browser]

SUBMIT = """
import sdc, json
from tw_workspace import connect, airlock
con = connect()
t = sdc.table("SELECT person_id, sex, positive FROM covid_tests JOIN persons USING (person_id)",
              rows=["sex"], cols=["positive"], unit="person_id", con=con)
req = airlock.new_request("Positive tests by sex")
req.add_table(t, name="tests_by_sex", description="Tested persons by sex and result")
open('/home/researcher/method.md', 'w').write('# Method\\nCounts of tested persons.\\n')
req.add_file('/home/researcher/method.md', name="method", description="How it was made")
req.submit()
print(json.dumps({"id": req.id}))
"""


def approve_all(page, base, rid):
    page.goto(f"{base}/services/airlock/requests/{rid}")
    for form in page.locator("form.vote").all():
        form.locator("input[value=approve]").check()
        form.locator("button[type=submit]").click()
        page.wait_for_load_state("networkidle")
    page.click("#action-review")
    page.wait_for_load_state("networkidle")


def test_submit_review_blind_release_download(login, instance, covid_server, tmp_path):
    code, out = instance.exec_python(covid_server, SUBMIT)
    assert code == 0, out
    rid = json.loads(out.strip().splitlines()[-1])["id"]
    base = instance.url

    # checker 1: sees the queue, the recomputed table with evidence, the unverified file
    c1 = login("checker")
    c1.goto(f"{base}/services/airlock/")
    assert c1.locator("#queue").get_by_text("Positive tests by sex").count() == 1
    c1.goto(f"{base}/services/airlock/requests/{rid}")
    assert c1.locator("#state").inner_text() == "submitted"
    assert c1.get_by_text("Recomputed by the airlock").count() == 1
    assert c1.locator(".unverified").count() == 1
    assert c1.locator(".diff.ok").count() == 1  # the preview matched the recomputation
    assert c1.locator(".evidence-grid table").count() == 1
    c1.screenshot(path=str(tmp_path / "checker.png"), full_page=True)
    approve_all(c1, base, rid)

    # checker 2: does not see checker 1's votes before deciding (blind review)
    c2 = login("checker2")
    c2.goto(f"{base}/services/airlock/requests/{rid}")
    assert "checker:" not in c2.locator("#output-1").inner_text()
    approve_all(c2, base, rid)
    # now both have decided: the votes are visible
    assert "checker" in c2.locator("#output-1").inner_text()
    c2.click("#action-approve")
    c2.wait_for_load_state("networkidle")
    assert c2.locator("#state").inner_text() == "approved"
    c2.click("#action-release")
    c2.wait_for_load_state("networkidle")
    assert c2.locator("#state").inner_text() == "released"

    # the researcher downloads the zip: exactly the reviewed bytes, with a manifest
    token = instance.token("researcher")
    st, req = instance.airlock("GET", f"api/requests/{rid}", token)
    reviewed = {f["name"]: f["sha256"] for o in req["outputs"] for f in o["files"]}
    r = login("researcher")
    r.goto(f"{base}/services/airlock/requests/{rid}")
    with r.expect_download() as dl:
        r.click("#download")
    data = (tmp_path / "release.zip")
    dl.value.save_as(data)
    with zipfile.ZipFile(io.BytesIO(data.read_bytes())) as z:
        names = [n for n in z.namelist() if n != "manifest.json"]
        manifest = json.loads(z.read("manifest.json"))
        got = {n.split("/")[-1]: hashlib.sha256(z.read(n)).hexdigest() for n in names}
    assert sorted(got.values()) == sorted(reviewed.values())
    listed = {f["sha256"] for o in manifest["outputs"] for f in o["files"]}
    assert listed == set(reviewed.values())
    table = next(o for o in manifest["outputs"] if o["name"] == "tests_by_sex")
    assert table["policy"]["name"] == "acro" and table["verified"] is True
    assert {d["checker"] for d in table["decisions"]} == {"checker", "checker2"}
