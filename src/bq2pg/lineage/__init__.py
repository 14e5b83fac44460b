"""Lineage: which BigQuery fields each PostgreSQL column comes from, as OpenLineage events
(``events``, ``emit``), as rows of ``bq2pg.lineage`` and as the graph ``bq2pg lineage`` draws
(``graph``)."""
