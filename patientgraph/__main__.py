"""``python -m patientgraph``: the command line, as the ``patientgraph`` script runs it."""

from patientgraph.app.cli import main

main()
