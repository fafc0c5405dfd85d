"""The Dash explorer (``patientgraph serve``): similar patients and cohort discovery.

* :mod:`dashboards.app`: :func:`create_app` (the shell, six pages, state in browser stores);
* :mod:`dashboards.pages`: overview, lesion map, patient, cohorts, biomarkers, Cypher query;
* :mod:`dashboards.figures`: figure builders, pure functions of tables;
* :mod:`dashboards.data`, :mod:`dashboards.context`: the workspace and graph, read-only;
* :mod:`dashboards.cohorts`, :mod:`dashboards.survival`: cohort definitions, KM comparisons;
* :mod:`dashboards.security`, :mod:`dashboards.server`: access control and serving.
"""

from dashboards.app import create_app

__all__ = ["create_app"]
