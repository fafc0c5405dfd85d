"""The Dash explorer (``patientgraph serve``); not yet implemented."""
