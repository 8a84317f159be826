"""Pure security rules of issue 23: what resources, messages and outputs may show."""

from __future__ import annotations

import pytest

from gestimum_pipeline.defs.alerts import AlertWebhook
from gestimum_pipeline.defs.resources import CrmDatabase, GestimumApi, SyncStateDatabase

SECRET = "S3cret-Unit-9x"


@pytest.mark.parametrize(
    "resource",
    [
        GestimumApi(url=f"http://proxy:{SECRET}@gestimum/", company_file="F", user="U", password=SECRET),
        CrmDatabase(url=f"postgresql://sync:{SECRET}@db/crm"),
        SyncStateDatabase(url=f"postgresql://sync:{SECRET}@db/state"),
        AlertWebhook(url=f"https://hooks.example/services/{SECRET}"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_resource_repr_shows_no_secret(resource: object) -> None:
    assert SECRET not in repr(resource) and SECRET not in str(resource)
    assert type(resource).__name__ in repr(resource)
