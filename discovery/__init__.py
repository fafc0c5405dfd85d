"""Clustering, lesion tracking, survival biomarker scan and GNN risk.

Stage ``discover`` of the pipeline (see DESIGN.md); not yet implemented.
"""
