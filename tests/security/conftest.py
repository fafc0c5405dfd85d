"""Fixtures of the security tests: the explorer's workspace, and the workspace-fault tests'."""

from tests.dashboards.conftest import cohort, workspace  # noqa: F401  (the explorer's)
from tests.security.workspace_base import base  # noqa: F401  (the workspace-fault tests')
