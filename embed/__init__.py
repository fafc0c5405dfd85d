"""Lesion and record encoders, patient vectors, the FAISS index and the kNN graph.

Stage ``embed`` and ``index`` of the pipeline (see DESIGN.md); not yet implemented.
"""
