"""data_ingest: the data managers' pipeline (the trusted third party).

It is the only holder of the pseudonymisation key. It turns source files into immutable,
pseudonymised dataset versions in the store, links them, and publishes them to projects with
project-specific pseudonyms. See docs/ingest.md.

The Python API mirrors the command line:

- :func:`data_ingest.keys.init_key` -- ``ingest keys init``
- :func:`data_ingest.pipeline.add` -- ``ingest add``
- :func:`data_ingest.linkage.link` -- ``ingest link``
- :func:`data_ingest.publish.publish` -- ``ingest publish``
- :func:`data_ingest.store.Store.catalog` -- ``ingest catalog``
- :func:`data_ingest.demo.run_demo` -- ``ingest demo``
"""

__version__ = "0.1.0"
# Bumped when the output of ``add`` for the same input would change (part of the idempotence
# fingerprint, so an upgraded pipeline makes a new version instead of reusing an old one).
FORMAT_VERSION = "1"
