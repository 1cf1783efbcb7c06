"""The job backbone: how a Job row is run (runner), what a handler gets (context), which
handler runs which kind (registry, filled by every app's ``jobs.py``), and the reaper."""
