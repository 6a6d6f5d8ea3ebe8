"""sdc.policy: shipped policies, the schema's validation errors, ACRO's numbers."""

from pathlib import Path

import pytest

import sdc
from sdc.errors import PolicyError
from sdc.policy import Policy, list_policies, load_policy, percentile_q, stat_kind


def test_shipped_policies_load_and_say_where_numbers_come_from():
    pols = {p.name: p for p in list_policies()}
    assert {"acro", "opensafely", "essnet"} <= set(pols)
    for p in pols.values():
        assert p.source, p.name
        text = Path(p.path).read_text()
        assert text.lstrip().startswith("#"), f"{p.name}.toml must start with its sources"


def test_acro_policy_matches_acro_1_0_2_default_yaml():
    acro = pytest.importorskip("acro")
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((Path(acro.__file__).parent / "default.yaml").read_text())
    p = load_policy("acro")
    assert p.min_units == cfg["safe_threshold"]
    assert [(d.n, d.k) for d in p.dominance] == [(cfg["safe_nk_n"], cfg["safe_nk_k"])]
    assert p.p == cfg["safe_pratio_p"]
    assert p.zeros_disclosive is cfg["zeros_are_disclosive"]
    assert (p.missing != "ignore") is cfg["check_missing_values"]
    assert p.negatives == "review"


def test_opensafely_policy_numbers():
    p = load_policy("opensafely")
    assert p.min_units == 8  # counts <= 7 redacted
    assert p.rounding_base == 5 and p.rounds
    assert not p.allows("min") and not p.allows("max")


def test_policy_from_file_and_dict(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[threshold]\nmin_units = 5\n[[dominance]]\nn = 1\nk = 0.5\n'
                 '[[dominance]]\nn = 3\nk = 0.75\n')
    p = load_policy(str(f))
    assert p.name == "mine" and p.min_units == 5
    assert [(d.n, d.k) for d in p.dominance] == [(1, 0.5), (3, 0.75)]
    assert p.top_k == 3
    assert p.p is None and not p.zeros_disclosive  # absent = off
    assert p.negatives == "review"  # never a silent pass
    assert load_policy({"name": "d", "threshold": {"min_units": 3}}).min_units == 3
    assert load_policy(p) is p


@pytest.mark.parametrize(
    "text, match",
    [
        ('name = "x"\n[treshold]\nmin_units = 5\n', "unknown key 'treshold'"),
        ('name = "x"\n[threshold]\nmin_units = "ten"\n', "threshold.min_units must be an integer"),
        ('name = "x"\n[threshold]\nmin_units = 0\n', "must be >= 1"),
        ('name = "x"\n[[dominance]]\nn = 2\nk = 90\n', r"write 0.90, not 90"),
        ('name = "x"\n[[dominance]]\nn = 2\n', "needs both"),
        ('name = "x"\n[p_percent]\np = 10\n', "fraction"),
        ('name = "x"\n[negatives]\naction = "pass"\n', "negatives.action must be one of"),
        ('name = "x"\n[statistics]\nallowed = ["mode"]\n', "unknown statistic 'mode'"),
        ('name = "x"\n[zeros]\ndisclosive = "yes"\n', "must be a bool"),
        ("[threshold]\nmin_units = 5\n", "'name' must be a non-empty string"),
        ('name = "x"\n[threshold\n', "not valid TOML"),
        ('name = "x"\n[rounding]\nstats = ["count"]\n', "needs 'base'"),
    ],
)
def test_bad_policy_files_give_one_clear_line(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PolicyError, match=match) as ei:
        load_policy(f)
    assert "\n" not in str(ei.value)


def test_unknown_policy_name_and_missing_file():
    with pytest.raises(PolicyError, match="unknown policy 'nope'.*acro"):
        load_policy("nope")
    with pytest.raises(PolicyError, match="not found"):
        load_policy("/nonexistent/rules.toml")
    with pytest.raises(PolicyError):
        load_policy(42)


def test_policy_json_roundtrip_keeps_the_numbers():
    p = load_policy("acro")
    j = p.to_json()
    assert j["name"] == "acro" and j["threshold"] == {"min_units": 10}
    assert j["dominance"] == [{"n": 2, "k": 0.9}] and j["p_percent"] == {"p": 0.1}
    q = Policy.from_dict({k: v for k, v in j.items() if v is not None})
    assert (q.min_units, q.dominance, q.p, q.zeros_disclosive) == (p.min_units, p.dominance, p.p, p.zeros_disclosive)


def test_stat_names():
    assert stat_kind("p90") == "percentile" and stat_kind("mean") == "mean"
    assert percentile_q("median") == 0.5 and percentile_q("p25") == 0.25
    with pytest.raises(ValueError):
        percentile_q("p100")
    assert sdc.load_policy("acro").allows("median")
    assert not sdc.load_policy("acro").allows("p90")
    assert not sdc.load_policy("essnet").allows("median")
