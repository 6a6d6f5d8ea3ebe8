"""The airlock: the one way out of the workspace.

* :mod:`hub.airlock.workflow` — the review state machine and its rules (pure);
* :mod:`hub.airlock.auditlog` — hash-chained audit entries and their verification (pure);
* :mod:`hub.airlock.releases` — the content-addressed release store, file-name sanitising,
  CSV formula neutralisation and the release zip;
* :mod:`hub.airlock.db` — SQLAlchemy storage;
* :mod:`hub.airlock.core` — :class:`Airlock`, the API the web layer calls.
"""

# Lazy: importing ``hub.airlock.sandbox_worker`` (a fresh process per recomputation) must not pay
# for SQLAlchemy and the rest of the core.
_EXPORTS = {
    "Airlock": "core", "Directory": "core",
    "AirlockError": "workflow", "NotFound": "workflow", "Forbidden": "workflow",
    "WorkflowError": "workflow", "RoleError": "workflow", "InvalidInput": "workflow",
    "State": "workflow",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
