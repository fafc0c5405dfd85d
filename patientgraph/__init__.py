"""PatientGraph: a patient similarity graph and imaging-biomarker discovery engine.

Data flows one way: ingest -> embed -> index -> graph -> discover -> explore, each stage
reading and writing files of a workspace folder (see docs/design.md).

>>> from patientgraph import Workspace, ingest_deeplesion

The public API: :class:`Workspace`, :class:`InputError`, the ingest adapters
:func:`ingest_deeplesion` (DL_info.csv + Images_png) and :func:`ingest_table` (a lesions
table of NIfTI / DICOM volumes), :func:`run_pipeline` (the stages after ingest) and
:func:`generate` (a synthetic cohort).
"""

from typing import TYPE_CHECKING

from patientgraph.errors import InputError
from patientgraph.lazy import lazy_exports

if TYPE_CHECKING:
    from patientgraph.app.pipeline import run_pipeline
    from patientgraph.deeplesion import ingest_deeplesion
    from patientgraph.synth import generate
    from patientgraph.table_ingest import ingest_table
    from patientgraph.workspace import Workspace

__version__ = "0.1.0"
__all__ = [
    "InputError",
    "Workspace",
    "__version__",
    "generate",
    "ingest_deeplesion",
    "ingest_table",
    "run_pipeline",
]

# Imported on first use, so that ``import patientgraph`` (and every package below it, which
# imports it first) does not import pandas, scipy or Pillow.
__getattr__ = lazy_exports(__name__, {
    "Workspace": "patientgraph.workspace",
    "generate": "patientgraph.synth",
    "ingest_deeplesion": "patientgraph.deeplesion",
    "ingest_table": "patientgraph.table_ingest",
    "run_pipeline": "patientgraph.app.pipeline",
})
