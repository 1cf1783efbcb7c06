# Recovery jobs are Job rows (protection.models.jobs) with kind "recovery"; the
# recovery wizard's draft and per-item results come with the recovery issue.
