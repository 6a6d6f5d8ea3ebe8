"""The review workflow of a release request: one explicit state machine, pure.

No database and no web in here: :mod:`hub.airlock.core` loads the facts (state, roles, votes,
submitted reviews) and asks this module what may happen; the pages only call the core.

States::

    draft ──submit──► submitted ──return──► returned ──resubmit──► resubmitted ──return──► returned …
      │                  │  └─approve─► approved ──release──► released
      │                  └────reject──► rejected               (resubmitted: the same as submitted)
      └──withdraw──► withdrawn   (also from submitted, returned and resubmitted)

``rejected``, ``released`` and ``withdrawn`` are final: nothing changes them.

Who (the roles of one user *for one request*, see :func:`roles_for`):

* the **author** (a member of the request's project) creates, edits, submits, resubmits and
  withdraws, and may answer the checkers with (public) comments while the request is returned;
  other **members** of the project may look at it and download it once released;
* a **checker** of the project votes per output, comments, submits their review, returns, approves,
  rejects and releases. The author is never a checker of their own request, and neither is any
  member of the project (independence), even if the project lists them as checker.

Reviews follow OpenSAFELY's airlock: each checker votes on every output (approve /
request changes / reject; the last two need a comment) and then *submits* their review, after
which their votes are locked for the round. The project's policy requires 1 or 2 independent
reviews; until that many are submitted, a checker sees only their own votes and comments
(:func:`visible_votes`, :func:`visible_comments`). The reviews are consolidated per output
(:func:`consolidate`) into approved / changes requested / rejected / conflicted / incomplete.
A return starts the author's turn; a resubmission starts a new *round*: the checkers review again
(votes on unchanged outputs carry over; changing an output deletes its votes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class AirlockError(Exception):
    """Base of every error the airlock reports; the message is fit to show a user as is."""


class NotFound(AirlockError):
    """No such thing, or one the user may not know exists (another project's request)."""


class Forbidden(AirlockError):
    """The user may see this but not do that."""


class InvalidInput(AirlockError):
    """Bad input: a name, a size, a file type, a missing field."""


class WorkflowError(AirlockError):
    """The workflow does not allow this action now (wrong state, wrong role, missing review)."""


class RoleError(WorkflowError, Forbidden):
    """The action exists in this state but the user's role may not do it (both a
    :class:`WorkflowError` and a :class:`Forbidden`)."""


class State(str, Enum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    RETURNED = "returned"
    RESUBMITTED = "resubmitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RELEASED = "released"
    WITHDRAWN = "withdrawn"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


FINAL_STATES = frozenset({State.REJECTED, State.RELEASED, State.WITHDRAWN})
#: States in which it is the checkers' turn.
REVIEW_STATES = frozenset({State.SUBMITTED, State.RESUBMITTED})
#: States in which the author may change outputs.
EDITABLE_STATES = frozenset({State.DRAFT, State.RETURNED})


class Action(str, Enum):
    EDIT = "edit"                    # add, replace or remove an output
    SUBMIT = "submit"
    RESUBMIT = "resubmit"
    WITHDRAW = "withdraw"
    VOTE = "vote"
    COMMENT = "comment"
    SUBMIT_REVIEW = "submit_review"
    RETURN = "return"
    APPROVE = "approve"
    REJECT = "reject"
    RELEASE = "release"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


class Role(str, Enum):
    AUTHOR = "author"
    MEMBER = "member"
    CHECKER = "checker"


class Decision(str, Enum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"


class OutputStatus(str, Enum):
    """Consolidated review of one output (OpenSAFELY's vocabulary plus ``rejected``)."""
    INCOMPLETE = "incomplete"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    REJECTED = "rejected"
    CONFLICTED = "conflicted"


#: (state, action) -> (role that may do it, next state).
TRANSITIONS: dict[tuple[State, Action], tuple[Role, State]] = {
    (State.DRAFT, Action.EDIT): (Role.AUTHOR, State.DRAFT),
    (State.DRAFT, Action.SUBMIT): (Role.AUTHOR, State.SUBMITTED),
    (State.DRAFT, Action.WITHDRAW): (Role.AUTHOR, State.WITHDRAWN),
    (State.RETURNED, Action.EDIT): (Role.AUTHOR, State.RETURNED),
    (State.RETURNED, Action.RESUBMIT): (Role.AUTHOR, State.RESUBMITTED),
    (State.RETURNED, Action.COMMENT): (Role.AUTHOR, State.RETURNED),  # answer the checkers
    (State.RETURNED, Action.WITHDRAW): (Role.AUTHOR, State.WITHDRAWN),
    (State.APPROVED, Action.RELEASE): (Role.CHECKER, State.RELEASED),
}
for _s in REVIEW_STATES:
    TRANSITIONS.update({
        (_s, Action.WITHDRAW): (Role.AUTHOR, State.WITHDRAWN),
        (_s, Action.VOTE): (Role.CHECKER, _s),
        (_s, Action.COMMENT): (Role.CHECKER, _s),
        (_s, Action.SUBMIT_REVIEW): (Role.CHECKER, _s),
        (_s, Action.RETURN): (Role.CHECKER, State.RETURNED),
        (_s, Action.APPROVE): (Role.CHECKER, State.APPROVED),
        (_s, Action.REJECT): (Role.CHECKER, State.REJECTED),
    })
del _s

_WHO = {Role.AUTHOR: "the request's author", Role.MEMBER: "a member of the project",
        Role.CHECKER: "an independent checker of the project"}


def roles_for(user: str, *, author: str, is_member: bool, is_checker: bool) -> frozenset[Role]:
    """The roles ``user`` has for one request.

    The author counts only while still a member of the project. A checker role is never given to
    the author or to any member of the project: nobody reviews their own (team's) request.
    """
    roles = set()
    if is_member:
        roles.add(Role.MEMBER)
        if user == author:
            roles.add(Role.AUTHOR)
    elif is_checker and user != author:
        roles.add(Role.CHECKER)
    return frozenset(roles)


def allowed(state: State | str, action: Action | str, roles: Iterable[Role]) -> bool:
    try:
        transition(state, action, roles)
    except WorkflowError:
        return False
    return True


def transition(state: State | str, action: Action | str, roles: Iterable[Role]) -> State:
    """The state after ``action`` by a user with ``roles``, or :class:`WorkflowError` saying why not.

    This checks state, action and role only; the conditions on reviews are in :func:`check_submit`,
    :func:`check_vote`, :func:`check_submit_review`, :func:`check_approve`,
    :func:`check_reject` and :func:`check_return`.
    """
    state, action, roles = State(state), Action(action), frozenset(roles)
    if state in FINAL_STATES:
        raise WorkflowError(f"the request is {state.value}: a {state.value} request never changes")
    rule = TRANSITIONS.get((state, action))
    if rule is None:
        possible = sorted(a.value for (s, a) in TRANSITIONS if s == state)
        raise WorkflowError(
            f"cannot {action.value.replace('_', ' ')} a {state.value} request "
            f"(possible now: {', '.join(possible)})")
    who, new = rule
    if who not in roles:
        if who is Role.CHECKER and Role.MEMBER in roles:
            raise RoleError("you cannot review a request of your own project")
        raise RoleError(
            f"only {_WHO[who]} may {action.value.replace('_', ' ')} this request")
    return new


# ---------------------------------------------------------------------------- reviews

@dataclass(frozen=True)
class Vote:
    checker: str
    output: str
    decision: Decision
    round: int = 1

    def __post_init__(self):
        object.__setattr__(self, "decision", Decision(self.decision))


@dataclass(frozen=True)
class Comment:
    author: str
    text: str
    public: bool
    round: int = 1
    output: str | None = None
    by_checker: bool = True


def check_submit(n_outputs: int) -> None:
    if n_outputs < 1:
        raise WorkflowError("a request needs at least one output before it can be submitted")


def check_vote(decision: Decision | str, comment: str, *, already_submitted: bool) -> Decision:
    try:
        decision = Decision(decision)
    except ValueError:
        raise WorkflowError(
            f"a vote is one of {', '.join(d.value for d in Decision)}, not {decision!r}") from None
    if already_submitted:
        raise WorkflowError("you have submitted your review for this round: your votes are final")
    if decision is not Decision.APPROVE and not comment.strip():
        raise WorkflowError(f"a '{decision.value}' vote needs a comment explaining it")
    return decision


def check_submit_review(checker: str, outputs: Iterable[str], votes: Iterable[Vote], *,
                        already_submitted: bool) -> None:
    if already_submitted:
        raise WorkflowError("you have already submitted your review for this round")
    voted = {v.output for v in votes if v.checker == checker}
    missing = sorted(set(outputs) - voted)
    if missing:
        raise WorkflowError(f"vote on every output before submitting your review; "
                            f"no vote yet on: {', '.join(missing)}")


def consolidate(outputs: Iterable[str], votes: Iterable[Vote], submitted: Iterable[str],
                required: int) -> dict[str, OutputStatus]:
    """Per output, the consolidated status of the submitted reviews of this round.

    Only votes of checkers in ``submitted`` count. Fewer than ``required`` submitted reviews, or a
    submitted reviewer without a vote on the output → incomplete; all approve → approved; all
    request changes → changes requested; all reject → rejected; anything else → conflicted.
    """
    submitted = set(submitted)
    by_output: dict[str, dict[str, Decision]] = {}
    for v in votes:
        if v.checker in submitted:
            by_output.setdefault(v.output, {})[v.checker] = v.decision
    out = {}
    for name in outputs:
        got = by_output.get(name, {})
        if len(submitted) < required or len(got) < len(submitted):
            out[name] = OutputStatus.INCOMPLETE
            continue
        kinds = set(got.values())
        if kinds == {Decision.APPROVE}:
            out[name] = OutputStatus.APPROVED
        elif kinds == {Decision.REQUEST_CHANGES}:
            out[name] = OutputStatus.CHANGES_REQUESTED
        elif kinds == {Decision.REJECT}:
            out[name] = OutputStatus.REJECTED
        else:
            out[name] = OutputStatus.CONFLICTED
    return out


def reviews_complete(submitted: Iterable[str], required: int) -> bool:
    return len(set(submitted)) >= required


def check_approve(outputs: Iterable[str], votes: Iterable[Vote], submitted: Iterable[str],
                  required: int) -> None:
    outputs, submitted = list(outputs), set(submitted)
    if not reviews_complete(submitted, required):
        raise WorkflowError(
            f"approval needs {required} independent review{'s' if required > 1 else ''}; "
            f"{len(submitted)} submitted so far")
    status = consolidate(outputs, votes, submitted, required)
    bad = sorted(n for n, s in status.items() if s is not OutputStatus.APPROVED)
    if bad:
        raise WorkflowError("every output must be approved by every review before the request "
                            f"is approved; not approved: {', '.join(bad)}")


def check_reject(submitted: Iterable[str], required: int, comment: str) -> None:
    """Rejection is final, so it needs the full number of independent reviews and a reason."""
    submitted = set(submitted)
    if not reviews_complete(submitted, required):
        raise WorkflowError(
            f"rejection needs {required} independent review{'s' if required > 1 else ''}; "
            f"{len(submitted)} submitted so far (return the request instead to ask for changes)")
    if not comment.strip():
        raise WorkflowError("say why the request is rejected (the researcher sees this comment)")


def check_return(comment: str) -> None:
    """A checker may return early (before all reviews), but must tell the researcher why."""
    if not comment.strip():
        raise WorkflowError("say what the researcher should change (a public comment is required)")


# ---------------------------------------------------------------------------- blinding

def _checkers_see_each_other(viewer: str, state: State, submitted: set[str], required: int) -> bool:
    if state not in REVIEW_STATES:
        return True          # the turn is over: returned, decided or withdrawn
    return viewer in submitted and len(submitted) >= required


def visible_votes(viewer: str, roles: Iterable[Role], state: State | str, votes: Iterable[Vote],
                  submitted: Iterable[str], required: int, current_round: int) -> list[Vote]:
    """The votes ``viewer`` may see.

    A checker always sees their own votes. They see the other checkers' votes of the current round
    only once they have submitted their own review and ``required`` reviews are in (so with two
    checkers, each decides blind to the other), or once the checkers' turn is over. Votes of
    earlier rounds were visible then and remain so. Members (including the author) see no
    individual votes; they see the consolidated status (:func:`visible_status`).
    """
    roles, state, submitted = frozenset(roles), State(state), set(submitted)
    if Role.CHECKER not in roles:
        return []
    open_ = _checkers_see_each_other(viewer, state, submitted, required)
    return [v for v in votes
            if v.checker == viewer or open_ or v.round < current_round]


def visible_comments(viewer: str, roles: Iterable[Role], state: State | str,
                     comments: Iterable[Comment], submitted: Iterable[str], required: int,
                     current_round: int) -> list[Comment]:
    """The comments ``viewer`` may see.

    Checkers: their own, the author's, and the other checkers' under the same blinding as votes.
    Members (and the author): their own side's comments, and the checkers' *public* comments once
    the checkers' turn of that round is over (returned, decided) or from earlier rounds. Private
    comments are for checkers only.
    """
    roles, state, submitted = frozenset(roles), State(state), set(submitted)
    out = []
    if Role.CHECKER in roles:
        open_ = _checkers_see_each_other(viewer, state, submitted, required)
        for c in comments:
            if (not c.by_checker or c.author == viewer or open_ or c.round < current_round):
                out.append(c)
        return out
    if Role.MEMBER in roles:
        turn_over = state not in REVIEW_STATES
        for c in comments:
            if not c.by_checker:
                out.append(c)
            elif c.public and (turn_over or c.round < current_round):
                out.append(c)
    return out


def visible_status(roles: Iterable[Role], state: State | str, outputs: Iterable[str],
                   votes: Iterable[Vote], submitted: Iterable[str],
                   required: int) -> dict[str, OutputStatus] | None:
    """Consolidated status per output, or ``None`` where the viewer may not see it yet.

    Checkers see it once ``required`` reviews are submitted; members once the checkers' turn is
    over.
    """
    roles, state, submitted = frozenset(roles), State(state), set(submitted)
    if Role.CHECKER in roles:
        if not reviews_complete(submitted, required) and state in REVIEW_STATES:
            return None
    elif Role.MEMBER in roles:
        if state in REVIEW_STATES or state is State.DRAFT:
            return None
    else:
        return None
    return consolidate(outputs, votes, submitted, required)


def checker_may_see(state: State | str, ever_submitted: bool) -> bool:
    """Checkers see a request once it has been submitted (never a draft, nor a draft withdrawn)."""
    return ever_submitted and State(state) is not State.DRAFT
