"""Fixtures of the security tests: the explorer's workspace."""

from tests.dashboards.conftest import cohort, workspace  # noqa: F401  (the explorer's)
