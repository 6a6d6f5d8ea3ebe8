"""Helpers shared by the data_ingest tests (a unique module name: tests have no packages)."""

from __future__ import annotations

import textwrap
from pathlib import Path

def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


PERSON_SPEC = """
[dataset]
name = "people"
title = "People"
unit = "person"
unit_id = "person_id"
temporal = "birth"

[columns.bsn]
action = "pseudonymise"
kind = "bsn"
as = "person_id"

[columns.birth]
action = "generalise"
to = "year"
as = "birth_year"
link = "birth_date"

[columns.sex]
action = "keep"
codes = { M = "male", V = "female" }
required = true
link = "sex"

[columns.postcode]
action = "generalise"
to = "pc4"
link = "postcode"

[columns.income]
action = "generalise"
to = "topcode"
top = 100000
type = "float"
"""

# 111222333 and 123456782 pass the 11-test; 999999999 fails it; row 3 has no BSN.
PERSON_CSV = """
bsn,name,birth,sex,postcode,income
111222333,Jan,1970-05-01,M,1234AB,50000
123456782,Piet,1980-01-31,V,2345 CD,70000
,Kees,1990-12-12,M,3456EF,400000
999999999,Els,2001-03-03,V,4567GH,
"""
