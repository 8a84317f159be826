"""Celery settings of a worker started with `celery -A dagster_celery.app worker`.

dagster_celery's worker app imports a module of this name when it is importable: copy this
file to the directory the worker starts in (the recipe's $DAGSTER_HOME). The broker URL may
carry a password, so it is read from the environment, as the sync job's executor reads it.
"""

import os

broker_url = os.environ["GESTIMUM_CELERY_BROKER_URL"]
result_backend = "rpc://"  # answers go back to the run over the broker: nothing else to run
# One task at a time per worker process: a worker busy with a long sink does not hold back
# tasks another worker could start.
worker_prefetch_multiplier = 1
