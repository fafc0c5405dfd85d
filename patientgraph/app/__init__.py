"""The application layer: the command line and the pipeline that chains the stages.

This is the one place in ``patientgraph`` that imports the packages built on top of it
(``embed``, ``graphdb``, ``discovery``, ``dashboards``); the rest of ``patientgraph`` (data
model, ingest, workspace, synthetic cohort) imports none of them, so those packages can
import ``patientgraph`` without a cycle. ``tests/test_layers.py`` keeps it that way.
"""

__all__: list[str] = []
