"""Keep a PostgreSQL CRM and a Gestimum ERP in sync, as a Dagster project."""

__version__ = "0.1.0"
