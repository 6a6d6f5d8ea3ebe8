"""Closed download paths, through the real proxy and hub, against a real workspace."""

import base64
import json
import urllib.parse

import pytest

pytestmark = pytest.mark.docker

BASE = "/user/researcher/covid"


@pytest.fixture(scope="module")
def files(instance, covid_server):
    """Files a researcher could have made in their home with code."""
    code, out = instance.exec_python(covid_server, """
import duckdb, os
os.chdir('/home/researcher')
duckdb.sql("COPY (SELECT * FROM range(1000)) TO 'extract.parquet'")
duckdb.sql("COPY (SELECT range AS id, range*2 AS v FROM range(20000)) TO 'big.csv'")
open('small.csv', 'w').write('a,b\\n1,2\\n')
open('table.xlsx', 'wb').write(b'PK\\x03\\x04 not really a spreadsheet')
import zipfile
with zipfile.ZipFile('bundle.zip', 'w') as z:
    z.writestr('x.txt', 'x')
open('figure.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(range(256)))
""")
    assert code == 0, out


def get(instance, token, path):
    return instance.request("GET", BASE + path, token)


@pytest.mark.parametrize("path", [
    "/files/Start%20here.ipynb",
    "/files/extract.parquet",
    "/files/small.csv",
    "/view/small.csv",
    "/nbconvert/html/Start%20here.ipynb?download=true",
    "/nbconvert/script/Start%20here.ipynb",
    "/api/nbconvert",
])
def test_files_view_and_nbconvert_answer_403(instance, researcher_token, files, path):
    status, body = get(instance, researcher_token, path)
    assert status == 403, (path, status, body[:200])


@pytest.mark.parametrize("name", ["extract.parquet", "big.csv", "table.xlsx", "bundle.zip",
                                  "figure.png"])
def test_contents_api_refuses_data_and_binary_files(instance, researcher_token, files, name):
    status, body = get(instance, researcher_token, f"/api/contents/{name}")
    assert status == 403, (name, status, body[:200])
    status, _ = get(instance, researcher_token, f"/api/contents/{name}?type=file&format=base64")
    assert status == 403


def test_contents_api_refuses_base64_of_a_text_file(instance, researcher_token, files):
    status, _ = get(instance, researcher_token, "/api/contents/small.csv?type=file&format=base64")
    assert status == 403
    status, body = get(instance, researcher_token, "/api/contents/small.csv")
    assert status == 200 and json.loads(body)["content"] == "a,b\n1,2\n"  # small text: fine


def test_listing_still_works(instance, researcher_token, files):
    status, body = get(instance, researcher_token, "/api/contents/")
    assert status == 200
    names = {m["name"] for m in json.loads(body)["content"]}
    assert {"Start here.ipynb", "extract.parquet"} <= names


def put(instance, token, name, model):
    return instance.request("PUT", BASE + "/api/contents/" + urllib.parse.quote(name), token,
                            body=model)


def test_uploads_accept_only_small_text_files(instance, researcher_token, files):
    ok = put(instance, researcher_token, "analysis.py",
             {"type": "file", "format": "text", "content": "print('hi')\n"})
    assert ok[0] in (200, 201), ok
    refused = [
        ("data.parquet", {"type": "file", "format": "base64",
                          "content": base64.b64encode(b"PAR1....").decode()}),
        ("data.csv", {"type": "file", "format": "text", "content": "id,bsn\n1,123456782\n"}),
        ("notes.md", {"type": "file", "format": "text", "content": "x" * (300 * 1024)}),
        ("chunk.py", {"type": "file", "format": "text", "content": "x", "chunk": 1}),
    ]
    for name, model in refused:
        status, body = put(instance, researcher_token, name, model)
        assert status == 403, (name, status, body[:200])
    status, body = get(instance, researcher_token, "/api/contents/")
    names = {m["name"] for m in json.loads(body)["content"]}
    assert not names & {"data.parquet", "data.csv", "notes.md", "chunk.py"}


def test_a_notebook_opens_and_saves(instance, researcher_token, files):
    status, body = get(instance, researcher_token, "/api/contents/Start%20here.ipynb")
    assert status == 200
    model = json.loads(body)
    assert model["type"] == "notebook"
    nb = model["content"]
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "my own note",
                        "id": "mynote"})
    status, body = put(instance, researcher_token, "Start here.ipynb",
                       {"type": "notebook", "format": "json", "content": nb})
    assert status == 200, body[:300]
    status, body = get(instance, researcher_token, "/api/contents/Start%20here.ipynb")
    assert json.loads(body)["content"]["cells"][-1]["source"] == "my own note"


def test_lab_download_and_export_commands_are_disabled_and_locked(instance, researcher_token,
                                                                  files):
    status, body = get(instance, researcher_token, "/lab")
    assert status == 200
    html = body.decode()
    start = html.index('id="jupyter-config-data"')
    cfg = json.loads(html[html.index(">", start) + 1: html.index("</script>", start)])
    disabled = cfg.get("disabledExtensions", [])
    locked = cfg.get("lockedExtensions", [])
    for plugin in ["@jupyterlab/docmanager-extension:download",
                   "@jupyterlab/filebrowser-extension:download",
                   "@jupyterlab/docmanager-extension:open-browser-tab",
                   "@jupyterlab/filebrowser-extension:open-browser-tab",
                   "@jupyterlab/notebook-extension:export"]:
        assert plugin in disabled, (plugin, disabled)
        assert plugin in locked, (plugin, locked)


def test_terminals_are_off(instance, researcher_token, files):
    status, _ = instance.request("POST", BASE + "/api/terminals", researcher_token, body={})
    assert status in (403, 404)
