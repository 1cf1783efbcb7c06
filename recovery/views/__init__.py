"""Recovery views: find a VM, pick a point, run the wizard, watch the recovery."""
