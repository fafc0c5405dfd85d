"""Clustering, lesion tracking, survival biomarker scan and GNN risk (stage ``discover``).

* :mod:`discovery.clusters`: UMAP + HDBSCAN tumour-type clusters of lesion embeddings, a
  2-D map, cluster descriptions, bootstrap stability, assignment of new lesions;
* :mod:`discovery.tracking`: the same lesion across a patient's studies, growth rates;
* :mod:`discovery.forecast`: where each tracked lesion is heading (baselines, a mixed
  model and the similarity model, with conformal intervals; RECIST-style categories);
* :mod:`discovery.candidates` and :mod:`discovery.survival`: the patients x candidates
  table and the Cox / Kaplan-Meier / log-rank scan with Benjamini-Hochberg q-values (runs on
  any table with outcomes, not only on the pipeline's);
* :mod:`discovery.gnn`: a PyTorch Geometric risk model on the patient graph, against a Cox
  model on the same inputs;
* :mod:`discovery.stage` runs them all on a workspace and writes ``W/discovery/`` and the
  graph; :func:`discovery.results.load_results` reads the results back, and
:func:`discovery.results.forecast_patient` / :func:`discovery.results.forecast_batch`
forecast from the fitted model.

``run`` (the stage), ``compare_groups`` and ``kaplan_meier`` are imported on first use.
"""

from discovery.results import DiscoveryResults, forecast_batch, forecast_patient, load_results
from patientgraph.lazy import lazy_exports

__all__ = ["DiscoveryResults", "compare_groups", "forecast_batch", "forecast_patient",
           "kaplan_meier", "load_results", "run"]

__getattr__ = lazy_exports(__name__, {
    "compare_groups": "discovery.survival",
    "kaplan_meier": "discovery.survival",
    "run": "discovery.stage",
})
