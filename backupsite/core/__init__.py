"""The ground every feature app stands on: settings helpers, roles, audit, credentials,
and the job backbone (Job rows, states, per-VM locks, runner, progress, handler registry,
stale-job reaper). It imports no feature app; feature apps import it."""
