"""The airlock's core on a real SQLite file and a real release folder (no mocks)."""
import hashlib
import io
import json
import sqlite3
import zipfile

import pytest

from airlock_support import CSV, approve_all, make_request
from hub.airlock import auditlog
from hub.airlock.core import Airlock
from hub.airlock.workflow import (AirlockError, Forbidden, InvalidInput, NotFound, RoleError,
                                  WorkflowError)


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- visibility

def test_non_member_sees_nothing_of_another_project(airlock):
    rid = make_request(airlock)
    approve_all(airlock, rid)
    airlock.release("chk1", rid)
    for op in (lambda: airlock.get_request("carol_not_here", rid),
               lambda: airlock.get_request("dave", rid),
               lambda: airlock.file_bytes("dave", rid, "t1", "t1.csv"),
               lambda: airlock.download("dave", rid),
               lambda: airlock.withdraw("dave", rid),
               lambda: airlock.vote("dave", rid, "t1", "approve")):
        with pytest.raises(NotFound) as exc:
            op()
        assert str(exc.value) == f"no release request {rid}"      # same as a missing one
    with pytest.raises(NotFound, match="no release request 999"):
        airlock.get_request("alice", 999)
    # carol is a member of "income" only: lists nothing of covid as a researcher
    assert airlock.list_requests("carol", role="researcher") == []
    assert airlock.list_requests("dave", role="checker") == []
    # chk1 checks income, not as a researcher
    with pytest.raises(NotFound):
        airlock.create_request("dave", "covid", "x")


def test_members_see_their_projects_requests(airlock):
    rid = make_request(airlock, submit=False)
    assert [r["id"] for r in airlock.list_requests("bob", role="researcher")] == [rid]
    got = airlock.get_request("bob", rid)
    assert got["outputs"][0]["files"][0]["sha256"] == sha(CSV)
    assert "edit" not in got["actions"]              # a colleague cannot change it
    with pytest.raises(RoleError):
        airlock.add_output("bob", rid, name="x", kind="file", description="d",
                           files={"x.txt": b"x"}, verified=False)


def test_checkers_do_not_see_drafts(airlock):
    rid = make_request(airlock, submit=False)
    with pytest.raises(NotFound):
        airlock.get_request("chk1", rid)
    assert airlock.list_requests("chk1", role="checker") == []
    airlock.withdraw("alice", rid)                   # withdrawn from draft: never submitted
    with pytest.raises(NotFound):
        airlock.get_request("chk1", rid)
    rid2 = make_request(airlock)
    assert [r["id"] for r in airlock.list_requests("chk1", role="checker")] == [rid2]
    assert [r["id"] for r in airlock.list_requests("chk1", role="checker",
                                                   states=["approved"])] == []


def test_self_review_refused(airlock):
    # alice is (wrongly) listed as checker of her own project: she still cannot review
    rid = make_request(airlock)
    for op in (lambda: airlock.vote("alice", rid, "t1", "approve"),
               lambda: airlock.submit_review("alice", rid),
               lambda: airlock.approve("alice", rid),
               lambda: airlock.return_request("alice", rid, "x"),
               lambda: airlock.reject("alice", rid, "x")):
        with pytest.raises(RoleError, match="own project"):
            op()
    assert all(r["author"] != "alice"
               for r in airlock.list_requests("alice", role="checker"))
    assert airlock.list_requests("alice", role="checker") == []


def test_checker_elsewhere_reviews_here_but_never_own(airlock, directory):
    # carol researches in income and checks covid
    rid = make_request(airlock)
    airlock.vote("carol", rid, "t1", "approve")
    own = make_request(airlock, author="carol", project="income")
    with pytest.raises(RoleError):
        airlock.vote("carol", own, "t1", "approve")
    # and if the directory made carol checker of income too: still not her own
    directory.checkers["income"].add("carol")
    with pytest.raises(RoleError):
        airlock.vote("carol", own, "t1", "approve")
    assert [r["id"] for r in airlock.list_requests("carol", role="checker")] == [rid]


# ---------------------------------------------------------------- two-checker blinding

def test_two_checkers_blind_until_both_submitted(airlock):
    rid = make_request(airlock)
    airlock.vote("chk1", rid, "t1", "approve", comment="fine by me", public=False)
    airlock.vote("chk2", rid, "t1", "request_changes", comment="round to 5", public=True)

    def seen(who):
        o = airlock.get_request(who, rid)["outputs"][0]
        return {v["checker"] for v in o["votes"]}, {c["author"] for c in o["comments"]}, o["status"]

    assert seen("chk1") == ({"chk1"}, {"chk1"}, None)
    assert seen("chk2") == ({"chk2"}, {"chk2"}, None)
    airlock.submit_review("chk1", rid)
    assert seen("chk1") == ({"chk1"}, {"chk1"}, None)        # still blind: B not in yet
    with pytest.raises(WorkflowError, match="final"):
        airlock.vote("chk1", rid, "t1", "reject", comment="changed my mind")
    airlock.submit_review("chk2", rid)
    assert seen("chk1") == ({"chk1", "chk2"}, {"chk1", "chk2"}, "conflicted")
    assert seen("chk2") == ({"chk1", "chk2"}, {"chk1", "chk2"}, "conflicted")
    # the researcher: no votes, no comments during review
    o = airlock.get_request("alice", rid)["outputs"][0]
    assert o["votes"] == [] and o["comments"] == [] and o["status"] is None
    with pytest.raises(WorkflowError, match="not approved: t1"):
        airlock.approve("chk1", rid)
    airlock.return_request("chk1", rid, "please round the counts")
    got = airlock.get_request("alice", rid)
    o = got["outputs"][0]
    assert o["votes"] == []
    assert [c["text"] for c in o["comments"]] == ["round to 5"]          # public only
    assert [c["text"] for c in got["comments"]] == ["please round the counts"]
    assert o["status"] == "conflicted"


def test_one_checker_policy(airlock):
    rid = make_request(airlock, author="carol", project="income")
    airlock.vote("chk1", rid, "t1", "approve")
    with pytest.raises(WorkflowError, match="1 independent review; 0 submitted"):
        airlock.approve("chk1", rid)
    airlock.submit_review("chk1", rid)
    assert airlock.approve("chk1", rid)["state"] == "approved"


def test_approval_needs_two_reviews_and_votes_on_every_output(airlock):
    rid = make_request(airlock, outputs=("t1", "t2"))
    airlock.vote("chk1", rid, "t1", "approve")
    with pytest.raises(WorkflowError, match="no vote yet on: t2"):
        airlock.submit_review("chk1", rid)
    airlock.vote("chk1", rid, "t2", "approve")
    airlock.submit_review("chk1", rid)
    with pytest.raises(WorkflowError, match="2 independent reviews; 1 submitted"):
        airlock.approve("chk1", rid)
    with pytest.raises(WorkflowError, match="2 independent reviews"):
        airlock.reject("chk1", rid, "no")
    with pytest.raises(WorkflowError, match="needs a comment"):
        airlock.vote("chk2", rid, "t1", "reject")


# ---------------------------------------------------------------- changes reset reviews

def test_changing_an_output_resets_its_reviews(airlock):
    rid = make_request(airlock, outputs=("t1", "t2"))
    for c in ("chk1", "chk2"):
        airlock.vote(c, rid, "t1", "approve")
        airlock.vote(c, rid, "t2", "request_changes", comment="too small")
        airlock.submit_review(c, rid)
    airlock.return_request("chk1", rid, "fix t2")
    new_csv = b"sex,n\nF,10\nM,15\n"
    out = airlock.add_output("alice", rid, name="t2", kind="table", description="rounded",
                             files={"t2.csv": new_csv}, verified=True)
    assert out["version"] == 2 and out["files"][0]["sha256"] == sha(new_csv)
    airlock.submit("alice", rid)
    r = airlock.get_request("chk1", rid)
    assert r["state"] == "resubmitted" and r["round"] == 2 and r["reviews_submitted"] == 0
    t1, t2 = r["outputs"]
    assert [v["decision"] for v in t1["votes"] if v["mine"]] == ["approve"]   # unchanged: kept
    assert t2["votes"] == []                                                 # changed: reset
    # a new round needs new reviews
    with pytest.raises(WorkflowError, match="0 submitted"):
        airlock.approve("chk1", rid)
    for c in ("chk1", "chk2"):
        airlock.vote(c, rid, "t2", "approve")
        airlock.submit_review(c, rid)
    airlock.approve("chk2", rid)
    rel = airlock.release("chk1", rid)
    assert {f["sha256"] for f in rel["files"]} == {sha(CSV), sha(new_csv)}
    entry = [e for e in airlock.audit_entries(rid) if e["action"] == "add_output"][-1]
    assert entry["details"]["votes_reset"] == 2 and entry["details"]["replaced"]


def test_outputs_only_change_in_draft_or_returned(airlock):
    rid = make_request(airlock)
    with pytest.raises(WorkflowError, match="cannot edit a submitted request"):
        airlock.add_output("alice", rid, name="t9", kind="file", description="d",
                           files={"a.txt": b"x"}, verified=False)
    with pytest.raises(WorkflowError):
        airlock.remove_output("alice", rid, "t1")
    airlock.withdraw("alice", rid)
    with pytest.raises(WorkflowError, match="never changes"):
        airlock.submit("alice", rid)


# ---------------------------------------------------------------- release

def test_released_bytes_are_exactly_the_approved_bytes(airlock, tmp_path):
    rid = make_request(airlock, submit=False)
    evil = b"name,n\n=HYPERLINK(\"http://x\"),-3.5\n"
    airlock.add_output("alice", rid, name="free", kind="file", description="my notes",
                       files={"../notes v1.CSV": evil, "fig.png": b"\x89PNG..."}, verified=False)
    airlock.submit("alice", rid)
    r = airlock.get_request("chk1", rid)
    free = next(o for o in r["outputs"] if o["name"] == "free")
    assert free["verified"] is False
    names = {f["name"]: f for f in free["files"]}
    assert set(names) == {"notes_v1.csv", "fig.png"}
    reviewed = airlock.file_bytes("chk1", rid, "free", "notes_v1.csv")
    assert reviewed == b'name,n\n"\'=HYPERLINK(""http://x"")",-3.5\n'   # quoted by csv
    assert names["notes_v1.csv"]["sha256"] == sha(reviewed)
    approve_all(airlock, rid, outputs=("t1", "free"))
    with pytest.raises(Forbidden):
        airlock.download("chk1", rid)               # checkers review; members download
    with pytest.raises(WorkflowError, match="only released"):
        airlock.download("alice", rid)
    with pytest.raises(RoleError):
        airlock.release("alice", rid)               # the author cannot release
    airlock.release("chk2", rid)
    name, data = airlock.download("bob", rid)
    assert name == "covid-request-1-release.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["free/fig.png", "free/notes_v1.csv", "manifest.json",
                                        "t1/t1.csv"]
        assert z.read("free/notes_v1.csv") == reviewed
        assert z.read("t1/t1.csv") == CSV
        m = json.loads(z.read("manifest.json"))
    assert m["request"]["id"] == rid and m["request"]["project"] == "covid"
    assert m["request"]["released_at"] and m["checkers_required"] == 2
    files = {f["path"]: f for o in m["outputs"] for f in o["files"]}
    assert files["free/notes_v1.csv"]["sha256"] == sha(reviewed)
    assert files["t1/t1.csv"]["size"] == len(CSV)
    t1 = next(o for o in m["outputs"] if o["name"] == "t1")
    assert t1["policy"] == {"name": "acro"} and t1["rules_applied"] == ["threshold"]
    assert {d["checker"] for d in t1["decisions"]} == {"chk1", "chk2"}
    assert "cells" not in json.dumps(m)             # no evidence (true values) leaves
    # the same request gives the same zip
    assert airlock.download("alice", rid) == (name, data)
    # released files are in the store, content-addressed
    for f in files.values():
        assert (tmp_path / "released" / f["sha256"][:2] / f["sha256"]).read_bytes() \
            in (reviewed, CSV, b"\x89PNG...")
    # approve is recorded with the approved hashes, release with the released ones: identical
    ents = airlock.audit_entries(rid)
    appr = next(e for e in ents if e["action"] == "approve")["details"]["files"]
    rel = next(e for e in ents if e["action"] == "release")["details"]["files"]
    assert appr == rel
    assert [e["action"] for e in ents if e["action"] == "download"] == ["download", "download"]


def test_crash_between_approval_and_release_recovers(tmp_path, db_url, directory, monkeypatch):
    a = Airlock(db_url, tmp_path / "released", directory)
    rid = make_request(a)
    approve_all(a, rid)

    def crash(self, request_id):
        raise RuntimeError("power cut")

    monkeypatch.setattr(Airlock, "_finish_release", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        a.release("chk1", rid)
    monkeypatch.undo()
    a.close()
    # files were written, the state was not flipped: approved, never half-released
    assert (tmp_path / "released" / sha(CSV)[:2] / sha(CSV)).exists()
    con = sqlite3.connect(tmp_path / "airlock.sqlite")
    assert con.execute("SELECT state FROM requests WHERE id=?", (rid,)).fetchone() == ("approved",)
    con.close()
    # restart: the constructor recovers
    b = Airlock(db_url, tmp_path / "released", directory)
    got = b.get_request("alice", rid)
    assert got["state"] == "released"
    assert [e["actor"] for e in b.audit_entries(rid) if e["action"] == "release"] == ["chk1"]
    _, data = b.download("alice", rid)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read("t1/t1.csv") == CSV
    assert b.recover() == []
    assert b.verify_audit()["ok"]
    b.close()


def test_second_release_completes_and_is_idempotent(tmp_path, db_url, directory, monkeypatch):
    a = Airlock(db_url, tmp_path / "released", directory, recover_on_start=False)
    rid = make_request(a)
    approve_all(a, rid)

    def crash(self, request_id):
        raise OSError("disk full")

    monkeypatch.setattr(Airlock, "_write_release_files", crash)
    with pytest.raises(OSError):
        a.release("chk2", rid)
    monkeypatch.undo()
    assert a.get_request("chk1", rid)["state"] == "approved"
    r1 = a.release("chk1", rid)
    r2 = a.release("chk2", rid)
    assert r1["state"] == r2["state"] == "released" and r1["files"] == r2["files"]
    assert [e["actor"] for e in a.audit_entries(rid) if e["action"] == "release"] == ["chk2"]


def test_download_refuses_a_file_altered_in_the_store(airlock, tmp_path):
    rid = make_request(airlock)
    approve_all(airlock, rid)
    airlock.release("chk1", rid)
    p = tmp_path / "released" / sha(CSV)[:2] / sha(CSV)
    p.chmod(0o644)
    p.write_bytes(b"sex,n\nF,1\nM,2\n")
    with pytest.raises(Exception, match="altered"):
        airlock.download("alice", rid)


# ---------------------------------------------------------------- limits

def test_oversized_and_disallowed_files_refused(tmp_path, db_url, directory):
    a = Airlock(db_url, tmp_path / "rel", directory, max_file_bytes=1000, max_outputs=2,
                max_files_per_output=2)
    rid = a.create_request("alice", "covid", "t")["id"]

    def add(name="o", files=None, verified=False, kind="file"):
        return a.add_output("alice", rid, name=name, kind=kind, description="d",
                            files={"a.txt": b"x"} if files is None else files,
                            verified=verified)

    with pytest.raises(InvalidInput, match="too large"):
        add(files={"big.csv": b"x" * 1001})
    with pytest.raises(InvalidInput, match="too large"):
        add(files={"big.png": b"x" * 1001})
    add("ok", files={"edge.png": b"x" * 1000})
    a.remove_output("alice", rid, "ok")
    for bad in ("evil.exe", "script.sh", "page.html", "noext", "data.parquet", "x.xlsx"):
        with pytest.raises(InvalidInput, match="not allowed"):
            add(files={bad: b"x"})
    with pytest.raises(InvalidInput, match="too many files"):
        add(files={"a.txt": b"1", "b.txt": b"2", "c.txt": b"3"})
    with pytest.raises(InvalidInput, match="two files would be named"):
        add(files={"a b.txt": b"1", "a_b.txt": b"2"})
    with pytest.raises(InvalidInput, match="UTF-8"):
        add(files={"a.csv": "é".encode("latin-1")})
    with pytest.raises(InvalidInput, match="kind"):
        add(kind="binary")
    with pytest.raises(InvalidInput, match="output name"):
        add(name="../t1")
    with pytest.raises(InvalidInput, match="at least one file"):
        add(files={})
    with pytest.raises(InvalidInput, match="description"):
        a.add_output("alice", rid, name="o", kind="file", description=" ",
                     files={"a.txt": b"x"}, verified=False)
    with pytest.raises(InvalidInput, match="JSON"):
        a.add_output("alice", rid, name="o", kind="table", description="d",
                     files={"a.csv": b"x"}, verified=True, evidence={"x": float("nan")})
    add("o1")
    add("o2")
    with pytest.raises(InvalidInput, match="at most 2 outputs"):
        add("o3")
    add("o2", files={"b.md": b"# replaced"})          # replacing does not count
    with pytest.raises(WorkflowError, match="at least one output"):
        b = a.create_request("alice", "covid", "empty")["id"]
        a.submit("alice", b)
    # nothing of the refused uploads was stored
    assert [o["name"] for o in a.get_request("alice", rid)["outputs"]] == ["o1", "o2"]
    assert [e["action"] for e in a.audit_entries(rid)] == [
        "create", "add_output", "remove_output", "add_output", "add_output", "add_output", "view"]
    a.close()


# ---------------------------------------------------------------- audit log in the database

def _tamper(db_file, sql, *args):
    con = sqlite3.connect(db_file)
    with con:
        con.execute(sql, args)
    con.close()


@pytest.fixture
def audited(airlock, tmp_path):
    rid = make_request(airlock)
    approve_all(airlock, rid)
    airlock.release("chk1", rid)
    airlock.download("alice", rid)
    assert airlock.verify_audit()["ok"]
    n = len(airlock.audit_entries())
    assert n >= 10
    return airlock, tmp_path / "airlock.sqlite", n


def test_audit_records_every_step(audited):
    a, _, _ = audited
    actions = [e["action"] for e in a.audit_entries()]
    for step in ("create", "add_output", "submit", "vote", "submit_review", "approve", "release",
                 "download"):
        assert step in actions
    e = a.audit_entries()[-1]
    assert e["actor"] == "alice" and e["time"].endswith("Z") and len(e["hash"]) == 64
    assert e["details"]["files"][0]["sha256"] == sha(CSV)


def test_edited_audit_row_detected(audited):
    a, db, n = audited
    _tamper(db, "UPDATE audit_log SET actor='mallory' WHERE seq=4")
    r = a.verify_audit()
    assert not r["ok"] and r["first_broken_seq"] == 4 and "edited" in r["reason"]


def test_edited_details_detected(audited):
    a, db, n = audited
    row = a.audit_entries()[-2]
    forged = json.dumps({**row["details"], "files": []}, sort_keys=True, separators=(",", ":"))
    _tamper(db, "UPDATE audit_log SET details_json=? WHERE seq=?", forged, row["seq"])
    r = a.verify_audit()
    assert not r["ok"] and r["first_broken_seq"] == row["seq"]


def test_deleted_audit_row_detected(audited):
    a, db, n = audited
    _tamper(db, "DELETE FROM audit_log WHERE seq=5")
    r = a.verify_audit()
    assert not r["ok"] and r["first_broken_index"] == 4 and "removed" in r["reason"]


def test_deleted_last_row_detected_by_head(audited):
    a, db, n = audited
    _tamper(db, "DELETE FROM audit_log WHERE seq=?", n)
    r = a.verify_audit()
    assert not r["ok"] and "head" in r["reason"]


def test_inserted_audit_row_detected(audited):
    a, db, n = audited
    entries = a.audit_entries()
    # make room at seq 3 (shift from the end, so the primary key never collides)
    con = sqlite3.connect(db)
    with con:
        for seq in range(n, 2, -1):
            con.execute("UPDATE audit_log SET seq=? WHERE seq=?", (seq + 1, seq))
        forged = auditlog.new_entry(entries[1], actor="mallory", action="approve", request_id=1)
        con.execute("INSERT INTO audit_log (seq, time, actor, action, request_id, details_json, "
                    "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                    (forged["seq"], forged["time"], forged["actor"], forged["action"],
                     forged["request_id"], "{}", forged["prev_hash"], forged["hash"]))
        con.execute("UPDATE audit_head SET seq=seq+1")
    con.close()
    r = a.verify_audit()
    assert not r["ok"] and r["first_broken_index"] == 3


def test_reordered_audit_rows_detected(audited):
    a, db, n = audited
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE audit_log SET seq=-1 WHERE seq=3")
        con.execute("UPDATE audit_log SET seq=3 WHERE seq=4")
        con.execute("UPDATE audit_log SET seq=4 WHERE seq=-1")
    con.close()
    r = a.verify_audit()
    assert not r["ok"] and r["first_broken_index"] == 2


def test_audit_survives_restart_and_appends_continue(audited, db_url, directory, tmp_path):
    a, db, n = audited
    a.close()
    b = Airlock(db_url, tmp_path / "released", directory)
    b.get_request("bob", 1)
    assert len(b.audit_entries()) == n + 1 and b.verify_audit()["ok"]
    b.close()


def test_a_failed_operation_leaves_no_trace(airlock):
    rid = make_request(airlock)
    before = airlock.audit_entries()
    with pytest.raises(AirlockError):
        airlock.approve("chk1", rid)
    with pytest.raises(AirlockError):
        airlock.vote("chk1", rid, "nope", "approve")
    assert airlock.audit_entries() == before


def test_returned_dicts_are_json(airlock):
    rid = make_request(airlock)
    for d in (airlock.get_request("chk1", rid), airlock.list_requests("alice", role="researcher"),
              airlock.audit_entries(), airlock.verify_audit()):
        json.dumps(d)


# ---------------------------------------------------------------- concurrency

def test_concurrent_writers_never_fork_the_chain(tmp_path, db_url, directory):
    import threading

    first = Airlock(db_url, tmp_path / "released", directory)
    rid = make_request(first)
    errors = []

    def work(user):
        a = Airlock(db_url, tmp_path / "released", directory)   # its own engine, like a process
        try:
            for _ in range(8):
                a.get_request(user, rid)
                a.list_requests(user, role="researcher")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            a.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in ("alice", "bob", "chk1", "chk2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = first.audit_entries()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert sum(e["action"] == "view" for e in entries) == 32
    assert first.verify_audit()["ok"]
    first.close()


def test_readers_are_not_blocked_by_a_writer(airlock, db_url):
    rid = make_request(airlock)
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.1, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")                 # another process holds the write lock
    try:
        assert airlock.list_requests("alice", role="researcher")[0]["id"] == rid
        assert airlock.verify_audit()["ok"]
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_actions_offer_only_what_would_work(airlock):
    rid = airlock.create_request("alice", "covid", "t")["id"]
    assert airlock.get_request("alice", rid)["actions"] == ["edit", "withdraw"]  # no submit yet
    airlock.add_output("alice", rid, name="t1", kind="table", description="d",
                       files={"t1.csv": CSV}, verified=True)
    assert airlock.get_request("alice", rid)["actions"] == ["edit", "submit", "withdraw"]
    airlock.submit("alice", rid)
    assert airlock.get_request("bob", rid)["actions"] == []
    assert airlock.get_request("chk1", rid)["actions"] == ["comment", "return", "vote"]
    airlock.vote("chk1", rid, "t1", "approve")
    assert "submit_review" in airlock.get_request("chk1", rid)["actions"]
    airlock.submit_review("chk1", rid)
    assert airlock.get_request("chk1", rid)["actions"] == ["comment", "return"]
    airlock.vote("chk2", rid, "t1", "approve")
    airlock.submit_review("chk2", rid)
    assert airlock.get_request("chk1", rid)["actions"] == ["approve", "comment", "reject",
                                                           "return"]
    airlock.approve("chk2", rid)
    assert airlock.get_request("chk1", rid)["actions"] == ["release"]
    assert airlock.get_request("alice", rid)["actions"] == []
