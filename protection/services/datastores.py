"""Opening a group's datastore for a job: an unavailable store fails the job with an alert.

Storage raises ``DatastoreUnavailable`` (missing, unmounted, replaced, read-only) and
knows nothing of alerts; this is where a job turns that into one alert per datastore,
bumped by every job that hits it and resolved by the first job that opens it again.
"""

from __future__ import annotations

from typing import NoReturn

from backupsite.core.jobs.context import JobContext, JobError
from protection.models import Alert, AlertKind
from storage.engine import Datastore as EngineDatastore
from storage.models import Datastore, DatastoreUnavailable


def open_for_job(context: JobContext, datastore: Datastore, *, write: bool = True) -> EngineDatastore:
    try:
        engine = datastore.open_engine(write=write)
    except DatastoreUnavailable as error:
        raise_unavailable(context, datastore, error)
    Alert.resolve(
        [AlertKind.DATASTORE_UNAVAILABLE], f"Job #{context.job.pk} opened the datastore", datastore=datastore
    )
    return engine


def raise_unavailable(context: JobContext, datastore: Datastore, error: DatastoreUnavailable) -> NoReturn:
    """Alert on the datastore, then fail the job with the same clear message."""
    Alert.raise_alert(AlertKind.DATASTORE_UNAVAILABLE, str(error), datastore=datastore, job=context.job)
    raise JobError(str(error)) from error
