"""The core of curate-and-train: config models, row schema and stage counts, atomic IO, devices,
the one vLLM builder, ingest, snapshots, reviews, reports and dataset diffs.

It imports no other package of the project: filters/ build on it, synthesis/ and trainers/
on both, and flows/ (the Prefect flow and the CLI) on everything.
"""

__version__ = "0.1.0"
