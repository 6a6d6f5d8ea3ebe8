from pathlib import Path

import pytest

from hub.projects import ProjectError, choose_project, load_projects, parse_project, projects_of


def make(store: Path, name: str, text: str) -> Path:
    d = store / "projects" / name
    d.mkdir(parents=True)
    (d / "project.toml").write_text(text)
    return d


@pytest.fixture
def store(tmp_path):
    make(tmp_path, "covid", 'members = ["ann", "bob"]\ncheckers = ["cas"]\n'
                            'datasets = ["persons"]\npolicy = "acro"\n')
    make(tmp_path, "income", 'members = ["bob"]\ncheckers = ["cas"]\ndatasets = ["income"]\n')
    return tmp_path


def test_load_and_membership(store):
    projects = load_projects(store)
    assert set(projects) == {"covid", "income"}
    assert projects["covid"].members == ("ann", "bob")
    assert projects["income"].policy == "acro"  # the default
    assert [p.name for p in projects_of("bob", projects)] == ["covid", "income"]
    assert projects_of("cas", projects) == []


def test_choose_project(store):
    projects = load_projects(store)
    assert choose_project("ann", projects, None).name == "covid"  # the only one
    assert choose_project("bob", projects, "income").name == "income"
    assert choose_project("bob", projects, None, server_name="income").name == "income"
    with pytest.raises(ProjectError, match="several projects"):
        choose_project("bob", projects, None)
    with pytest.raises(ProjectError, match="ann is not a member of project 'income'"):
        choose_project("ann", projects, "income")
    with pytest.raises(ProjectError, match="no project named 'nope'"):
        choose_project("ann", projects, "nope")
    with pytest.raises(ProjectError, match="not a member of any project"):
        choose_project("cas", projects, None)


@pytest.mark.parametrize("text, message", [
    ("members = 'ann'\n", "must be a list of strings"),
    ("members = ['Ann Smith']\n", "invalid members"),
    ("members = ['ann']\ncheckers = ['ann']\n", "both member and checker"),
    ("name = 'other'\n", "differs from its folder"),
    ("members = [\n", "not valid TOML"),
    ("memebrs = ['ann']\n", "unknown keys: memebrs"),
    ("datasets = ['bad-name']\n", "invalid datasets"),
    ("policy = ''\n", "policy"),
])
def test_bad_project_files_name_the_problem(tmp_path, text, message):
    d = make(tmp_path, "p", text)
    with pytest.raises(ProjectError, match=message):
        parse_project(d)


def test_missing_project_toml(tmp_path):
    (tmp_path / "projects" / "empty").mkdir(parents=True)
    with pytest.raises(ProjectError, match="missing"):
        load_projects(tmp_path)


def test_published_datasets_are_those_with_parquet(tmp_path):
    d = make(tmp_path, "p", "members = ['ann']\n")
    (d / "data" / "persons").mkdir(parents=True)
    (d / "data" / "persons" / "part-0.parquet").write_bytes(b"PAR1")
    (d / "data" / "empty").mkdir()
    assert parse_project(d).published_datasets() == ["persons"]
