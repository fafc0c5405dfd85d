"""PatientGraph: a patient similarity graph and imaging-biomarker discovery engine.

Data flows one way: ingest -> embed -> index -> graph -> discover -> explore, each stage
reading and writing files of a workspace folder (see docs/design.md).

>>> from patientgraph import Workspace, ingest_deeplesion
"""

from patientgraph.deeplesion import ingest_deeplesion
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["InputError", "Workspace", "ingest_deeplesion", "__version__"]
