"""The patient graph: ``GraphStore`` with an embedded (LadybugDB) and a Neo4j backend.

Stage ``graph`` of the pipeline (see DESIGN.md); not yet implemented.
"""
