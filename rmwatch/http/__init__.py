"""The HTTP layer: PD's routes for the writer and the sidecar, on one set of parsers and helpers.

Above the writer and the replica, below the CLI. Nothing here is public API: run the apps with
``rmwatch writer`` / ``rmwatch replica``, or build them with ``create_writer_app`` /
``create_sidecar_app`` in tests.

- ``pd``: PD's prefix, ``with_stats``, plain-text and write-success answers;
  ``keyspace``: which keyspace a request names; ``body``: the capped body reader;
  ``pdjson``: PD's JSON bodies; ``errors``: the error tree mapped to answers.
- ``forward``: the one forwarding client and its failure classification;
  ``writer_forward`` (non-leader to leader) and ``sidecar_forward`` (writes to the leader).
- ``writer_app`` with its fast path ``direct_routes``; ``sidecar_app`` with its fast path
  ``fast_group_read``, its ``metrics`` and the server's drain, ``server_drain``.
"""
