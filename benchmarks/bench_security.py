"""The hardening in figures: attack cases refused and kill points survived.

Runs the security suite (``tests/security``: real LadybugDB and Neo4j stores, the explorer
over real sockets on waitress and the development server, the CLI on real files, kill -9
fault injection) and records, from its JUnit report, how many cases of each kind passed
and failed. A case is an attack or fault that the code must refuse or survive; a failure
here is a hole. The explorer's latency with the per-query time limit in place is measured
by ``bench_dashboards``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from benchmarks.results import record

BENCH = "security"
ROOT = Path(__file__).resolve().parent.parent
# test file -> what its cases are
KINDS = {
    "test_query_guard": "query attacks (both backends)",
    "test_http": "HTTP attacks (waitress and dev server)",
    "test_privacy": "patient-data leak cases",
    "test_workspace_faults": "workspace fault cases",
    "test_crash_consistency": "stages killed (kill -9)",
}


def run_suite(report: Path) -> ET.Element:
    subprocess.run([sys.executable, "-m", "pytest", "tests/security", "-q", "-n", "2",
                    "-p", "no:cacheprovider", f"--junitxml={report}"], cwd=ROOT, check=False)
    return ET.parse(report).getroot()


def main(quick: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = run_suite(Path(tmp) / "security.xml")
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    kill_points = 0
    for case in root.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        if module not in KINDS:
            continue
        bad = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if skipped:
            continue
        (failed if bad else passed)[module] += 1
        for prop in case.iter("property"):
            if prop.get("name") == "kill_points" and not bad:
                kill_points += int(prop.get("value"))
    for module, kind in KINDS.items():
        record(BENCH, f"{kind}: refused or survived", passed[module], "cases",
               n=passed[module] + failed[module],
               note=f"tests/security/{module}.py; failing cases: {failed[module]}")
    record(BENCH, "kill points survived (old or new state, rerun completes)", kill_points,
           "kill points", note="test_crash_consistency: kill -9 at every rename into the "
           "workspace and mid-write-back, then a rerun")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
