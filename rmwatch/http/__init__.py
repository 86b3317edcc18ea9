"""The HTTP layer: PD's routes for the writer and the sidecar, on one set of parsers and helpers.

Above the writer and the replica, below the CLI. Nothing here is public API: run the apps with
``rmwatch writer`` / ``rmwatch replica``, or build them with ``create_writer_app`` /
``create_sidecar_app`` in tests.
"""
