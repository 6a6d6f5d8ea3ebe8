"""The airlock: the one way out of the workspace.

* :mod:`hub.airlock.workflow` — the review state machine and its rules (pure);
* :mod:`hub.airlock.auditlog` — hash-chained audit entries and their verification (pure);
* :mod:`hub.airlock.releases` — the content-addressed release store, file-name sanitising,
  CSV formula neutralisation and the release zip;
* :mod:`hub.airlock.db` — SQLAlchemy storage;
* :mod:`hub.airlock.core` — :class:`Airlock`, the API the web layer calls.
"""

from .core import Airlock, Directory
from .workflow import (AirlockError, Forbidden, InvalidInput, NotFound, RoleError, State,
                       WorkflowError)

__all__ = ["Airlock", "Directory", "AirlockError", "NotFound", "Forbidden", "WorkflowError",
           "RoleError", "InvalidInput", "State"]
