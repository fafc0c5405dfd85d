"""Lesion and record encoders, patient vectors, the FAISS index and the kNN graph.

Pipeline stages (``patientgraph run --stages embed,index``):

* :mod:`embed.stage` trains the lesion encoder (:mod:`embed.train`) and the record encoder
  (:mod:`embed.tabular`) on the cohort and writes ``W/embeddings/`` and ``W/models/``;
* :mod:`embed.index_stage` builds the FAISS indexes (:mod:`embed.index`) and the kNN graphs
  in ``W/index/``.

Queries: :func:`embed.similar.similar_patients` (scores split into modality contributions,
user weights) and :func:`embed.similar.similar_lesions`. Options of the embed stage are in
:mod:`embed.config`.

The names below are imported on first use: ``import embed`` does not import torch.
"""

from patientgraph.lazy import lazy_exports

__all__ = ["EmbedConfig", "TrainConfig", "VectorIndex", "similar_lesions", "similar_patients"]

__getattr__ = lazy_exports(__name__, {
    "EmbedConfig": "embed.config",
    "TrainConfig": "embed.config",
    "VectorIndex": "embed.index",
    "similar_lesions": "embed.similar",
    "similar_patients": "embed.similar",
})
