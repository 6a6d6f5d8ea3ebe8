"""The review state machine on its own: no database, no web."""
import itertools

import pytest
from hypothesis import given, strategies as st

from hub.airlock import workflow as wf
from hub.airlock.workflow import (Action, Decision, OutputStatus, Role, RoleError, State, Vote,
                                  WorkflowError)

A, M, C = Role.AUTHOR, Role.MEMBER, Role.CHECKER
AUTHOR = frozenset({A, M})
MEMBER = frozenset({M})
CHECKER = frozenset({C})
NOBODY = frozenset()
ROLESETS = [AUTHOR, MEMBER, CHECKER, NOBODY]

# The whole table, written out by hand: (state, action) -> (who, next state).
EXPECTED = {
    ("draft", "edit"): (AUTHOR, "draft"),
    ("draft", "submit"): (AUTHOR, "submitted"),
    ("draft", "withdraw"): (AUTHOR, "withdrawn"),
    ("returned", "edit"): (AUTHOR, "returned"),
    ("returned", "resubmit"): (AUTHOR, "resubmitted"),
    ("returned", "withdraw"): (AUTHOR, "withdrawn"),
    ("returned", "comment"): (AUTHOR, "returned"),
    ("approved", "release"): (CHECKER, "released"),
}
for s in ("submitted", "resubmitted"):
    EXPECTED.update({
        (s, "withdraw"): (AUTHOR, "withdrawn"),
        (s, "vote"): (CHECKER, s),
        (s, "comment"): (CHECKER, s),
        (s, "submit_review"): (CHECKER, s),
        (s, "return"): (CHECKER, "returned"),
        (s, "approve"): (CHECKER, "approved"),
        (s, "reject"): (CHECKER, "rejected"),
    })


@pytest.mark.parametrize("state,action,roles",
                         list(itertools.product(list(State), list(Action), ROLESETS)))
def test_every_state_action_role(state, action, roles):
    rule = EXPECTED.get((state.value, action.value))
    if rule is not None and rule[0] <= roles:
        assert wf.transition(state, action, roles) == State(rule[1])
        assert wf.allowed(state, action, roles)
    else:
        with pytest.raises(WorkflowError) as exc:
            wf.transition(state, action, roles)
        msg = str(exc.value)
        assert msg and len(msg) > 15
        if state in wf.FINAL_STATES:
            assert "never changes" in msg
        elif rule is None:
            assert f"cannot {action.value.replace('_', ' ')}" in msg
        else:
            assert isinstance(exc.value, RoleError)
        assert not wf.allowed(state, action, roles)


def test_final_states_are_final():
    assert wf.FINAL_STATES == {State.REJECTED, State.RELEASED, State.WITHDRAWN}
    for s in wf.FINAL_STATES:
        for a, r in itertools.product(Action, ROLESETS + [AUTHOR | CHECKER]):
            with pytest.raises(WorkflowError, match="never changes"):
                wf.transition(s, a, r)


def test_strings_accepted_and_unknown_refused():
    assert wf.transition("draft", "submit", AUTHOR) is State.SUBMITTED
    with pytest.raises(ValueError):
        wf.transition("nonsense", "submit", AUTHOR)


@given(st.lists(st.tuples(st.sampled_from(list(Action)), st.sampled_from(ROLESETS)),
                max_size=30))
def test_random_walks_stay_in_the_graph(steps):
    state = State.DRAFT
    seen_final = None
    for action, roles in steps:
        try:
            new = wf.transition(state, action, roles)
        except WorkflowError:
            continue
        assert seen_final is None, "a final state changed"
        assert (state.value, action.value) in EXPECTED
        state = new
        if state in wf.FINAL_STATES:
            seen_final = state


# ---------------------------------------------------------------- roles / self-review

def test_author_is_never_checker_of_own_request():
    r = wf.roles_for("alice", author="alice", is_member=True, is_checker=True)
    assert r == {A, M}
    with pytest.raises(RoleError, match="own project"):
        wf.transition("submitted", "approve", r)


def test_member_colleague_is_not_an_independent_checker():
    r = wf.roles_for("bob", author="alice", is_member=True, is_checker=True)
    assert r == {M}
    with pytest.raises(WorkflowError):
        wf.transition("submitted", "vote", r)


def test_checker_elsewhere_researcher_here():
    # carol researches in another project and checks this one: she may review here.
    assert wf.roles_for("carol", author="alice", is_member=False, is_checker=True) == {C}
    # a former member (no longer in the project) keeps nothing of her request
    assert wf.roles_for("alice", author="alice", is_member=False, is_checker=True) == set()
    assert wf.roles_for("eve", author="alice", is_member=False, is_checker=False) == set()


# ---------------------------------------------------------------- reviews

def votes(*triples, round=1):
    return [Vote(c, o, d, round) for c, o, d in triples]


def test_vote_needs_a_comment_unless_approve_and_is_locked_after_review():
    assert wf.check_vote("approve", "", already_submitted=False) is Decision.APPROVE
    for d in ("request_changes", "reject"):
        with pytest.raises(WorkflowError, match="needs a comment"):
            wf.check_vote(d, "  ", already_submitted=False)
        assert wf.check_vote(d, "cell 3 is small", already_submitted=False) is Decision(d)
    with pytest.raises(WorkflowError, match="one of"):
        wf.check_vote("maybe", "x", already_submitted=False)
    with pytest.raises(WorkflowError, match="final"):
        wf.check_vote("approve", "", already_submitted=True)


def test_submit_review_needs_a_vote_on_every_output():
    v = votes(("c1", "t1", "approve"))
    with pytest.raises(WorkflowError, match="t2"):
        wf.check_submit_review("c1", ["t1", "t2"], v, already_submitted=False)
    wf.check_submit_review("c1", ["t1"], v, already_submitted=False)
    with pytest.raises(WorkflowError, match="already"):
        wf.check_submit_review("c1", ["t1"], v, already_submitted=True)
    with pytest.raises(WorkflowError):
        wf.check_submit(0)


@pytest.mark.parametrize("d1,d2,expected", [
    ("approve", "approve", OutputStatus.APPROVED),
    ("request_changes", "request_changes", OutputStatus.CHANGES_REQUESTED),
    ("reject", "reject", OutputStatus.REJECTED),
    ("approve", "request_changes", OutputStatus.CONFLICTED),
    ("approve", "reject", OutputStatus.CONFLICTED),
    ("request_changes", "reject", OutputStatus.CONFLICTED),
])
def test_consolidation_two_checkers(d1, d2, expected):
    v = votes(("c1", "t", d1), ("c2", "t", d2))
    assert wf.consolidate(["t"], v, {"c1", "c2"}, 2) == {"t": expected}
    # one review in: incomplete, whatever it says
    assert wf.consolidate(["t"], v, {"c1"}, 2) == {"t": OutputStatus.INCOMPLETE}
    # votes of a checker who has not submitted do not count
    assert wf.consolidate(["t"], v, {"c1"}, 1)["t"] == \
        {"approve": OutputStatus.APPROVED, "request_changes": OutputStatus.CHANGES_REQUESTED,
         "reject": OutputStatus.REJECTED}[d1]


def test_approve_needs_all_required_reviews_all_approving():
    v = votes(("c1", "t1", "approve"), ("c2", "t1", "approve"), ("c1", "t2", "approve"),
              ("c2", "t2", "request_changes"))
    with pytest.raises(WorkflowError, match="2 independent reviews; 1 submitted"):
        wf.check_approve(["t1"], v, {"c1"}, 2)
    wf.check_approve(["t1"], v, {"c1", "c2"}, 2)
    with pytest.raises(WorkflowError, match="not approved: t2"):
        wf.check_approve(["t1", "t2"], v, {"c1", "c2"}, 2)
    wf.check_approve(["t1"], v, {"c1"}, 1)


def test_reject_and_return_need_reasons():
    with pytest.raises(WorkflowError, match="independent review"):
        wf.check_reject({"c1"}, 2, "no")
    with pytest.raises(WorkflowError, match="why"):
        wf.check_reject({"c1", "c2"}, 2, "")
    wf.check_reject({"c1", "c2"}, 2, "identifies a person")
    with pytest.raises(WorkflowError, match="public comment"):
        wf.check_return(" ")
    wf.check_return("round to 5")


# ---------------------------------------------------------------- blinding

def test_two_checkers_are_blind_to_each_other_until_both_submitted():
    v = votes(("c1", "t", "approve"), ("c2", "t", "reject"))
    see = lambda who, submitted, state="submitted": {  # noqa: E731
        x.checker for x in wf.visible_votes(who, CHECKER, state, v, submitted, 2, 1)}
    assert see("c1", set()) == {"c1"}
    assert see("c1", {"c1"}) == {"c1"}          # A submitted, B not yet: A still blind
    assert see("c2", {"c1"}) == {"c2"}          # B has not submitted: blind
    assert see("c1", {"c1", "c2"}) == {"c1", "c2"}
    assert see("c2", {"c1", "c2"}) == {"c1", "c2"}
    assert see("c3", {"c1", "c2"}) == set()      # a third checker who has not reviewed
    assert see("c1", {"c1"}, "returned") == {"c1", "c2"}   # the turn is over
    # members never see individual votes
    assert wf.visible_votes("alice", AUTHOR, "returned", v, {"c1", "c2"}, 2, 1) == []
    # the consolidated status is hidden from checkers until reviews are complete
    assert wf.visible_status(CHECKER, "submitted", ["t"], v, {"c1"}, 2) is None
    assert wf.visible_status(CHECKER, "submitted", ["t"], v, {"c1", "c2"}, 2) == \
        {"t": OutputStatus.CONFLICTED}
    assert wf.visible_status(AUTHOR, "submitted", ["t"], v, {"c1", "c2"}, 2) is None
    assert wf.visible_status(AUTHOR, "returned", ["t"], v, {"c1", "c2"}, 2) is not None


def test_earlier_round_votes_stay_visible():
    v = [Vote("c2", "t", "approve", 1), Vote("c2", "u", "approve", 2)]
    got = wf.visible_votes("c1", CHECKER, "resubmitted", v, set(), 2, 2)
    assert [(x.output, x.round) for x in got] == [("t", 1)]


def test_comment_visibility():
    C_ = wf.Comment
    cs = [C_("c1", "private note", False, 1, "t"), C_("c1", "please round", True, 1, "t"),
          C_("c2", "c2 private", False, 1), C_("alice", "done", True, 1, None, by_checker=False)]
    texts = lambda who, roles, state, submitted: [  # noqa: E731
        c.text for c in wf.visible_comments(who, roles, state, cs, submitted, 2, 1)]
    # during review: the author sees only their own side
    assert texts("alice", AUTHOR, "submitted", set()) == ["done"]
    # returned: public checker comments appear, private ones never
    assert texts("alice", AUTHOR, "returned", {"c1"}) == ["please round", "done"]
    assert texts("bob", MEMBER, "approved", {"c1", "c2"}) == ["please round", "done"]
    # checkers: blind to each other's comments until both reviews are in
    assert texts("c1", CHECKER, "submitted", {"c1"}) == ["private note", "please round", "done"]
    assert texts("c2", CHECKER, "submitted", {"c1", "c2"}) == [c.text for c in cs]
    assert texts("eve", NOBODY, "released", {"c1", "c2"}) == []


def test_checker_may_see():
    assert not wf.checker_may_see("draft", False)
    assert not wf.checker_may_see("withdrawn", False)    # withdrawn from draft
    assert wf.checker_may_see("withdrawn", True)
    assert wf.checker_may_see("submitted", True)
