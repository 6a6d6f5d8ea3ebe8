"""The same core on PostgreSQL, when a server is given: AIRLOCK_PG_URL=postgresql+psycopg://…

Skipped otherwise (the default database is SQLite). The database is emptied first.
"""
import io
import os
import threading
import zipfile

import pytest

from airlock_support import CSV, approve_all, make_request
from hub.airlock.core import Airlock

PG_URL = os.environ.get("AIRLOCK_PG_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="AIRLOCK_PG_URL not set")


@pytest.fixture
def pg(tmp_path, directory):
    from sqlalchemy import create_engine

    from hub.airlock.db import Base

    eng = create_engine(PG_URL)
    Base.metadata.drop_all(eng)
    eng.dispose()
    a = Airlock(PG_URL, tmp_path / "released", directory)
    yield a
    a.close()


def test_flow_release_and_tamper_on_postgres(pg, tmp_path, directory):
    from sqlalchemy import text

    rid = make_request(pg)
    approve_all(pg, rid)
    pg.release("chk1", rid)
    _, data = pg.download("alice", rid)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read("t1/t1.csv") == CSV

    errors = []

    def work(user):
        a = Airlock(PG_URL, tmp_path / "released", directory)
        try:
            for _ in range(6):
                a.get_request(user, rid)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            a.close()

    ts = [threading.Thread(target=work, args=(u,)) for u in ("alice", "bob", "chk1", "chk2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    entries = pg.audit_entries()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert pg.verify_audit()["ok"]
    with pg.db.engine.begin() as con:
        con.execute(text("UPDATE audit_log SET actor='mallory' WHERE seq=3"))
    r = pg.verify_audit()
    assert not r["ok"] and r["first_broken_seq"] == 3
