"""The job runner: every kind of long work runs through :func:`runner.run_job`."""
