"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability import Deployment, deployment, run_job, seed_standard


@pytest.fixture
def synced(pg_server_url: str, sync_role_crm_template: str) -> Iterator[Deployment]:
    """The standard CRM after one successful run: imported, rejected (locally and by Gestimum) and
    held rows exist, for the operator's tools to act on."""
    with deployment(pg_server_url, template=sync_role_crm_template) as d:
        seed_standard(d.crm_url)
        run = run_job(d)
        assert run.success, run.failures
        yield d
