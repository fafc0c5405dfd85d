"""Fixtures of the security tests: the explorer's workspace, and the workspace-fault tests'."""

from tests.dashboards.conftest import (  # noqa: F401  (the explorer's)
    cohort,
    explorer_base,
    workspace,
)
from tests.security.workspace_base import base  # noqa: F401  (the workspace-fault tests')
