from django.urls import path

from protection.views import capacity, groups, hosts, inventory, jobs, wizard

app_name = "protection"
urlpatterns = [
    path("", inventory.protection_overview, name="overview"),
    path("hosts/add/", hosts.host_add, name="host-add"),
    path("hosts/test-connection/", hosts.host_test_connection, name="host-test-connection"),
    path("hosts/<int:pk>/", hosts.host_detail, name="host-detail"),
    path("hosts/<int:pk>/connection/", hosts.host_connection, name="host-connection"),
    path("hosts/<int:pk>/refresh/", hosts.host_refresh, name="host-refresh"),
    path("hosts/<int:pk>/remove/", hosts.host_remove, name="host-remove"),
    path("vms/<int:pk>/", inventory.vm_detail, name="vm-detail"),
    path("vms/<int:pk>/run/", inventory.vm_run_job, name="vm-run-job"),
    path("vms/<int:pk>/stop/", inventory.vm_stop_protection, name="vm-stop-protection"),
    path("groups/new/", groups.group_create, name="group-create"),
    path("groups/<int:pk>/", groups.group_detail, name="group-detail"),
    path("groups/<int:pk>/modify/", groups.group_modify, name="group-modify"),
    path(
        "groups/<int:pk>/consistency-check/", groups.group_consistency_check, name="group-consistency-check"
    ),
    path("groups/<int:pk>/stop/", groups.group_stop_protection, name="group-stop-protection"),
    path("wizard/<int:pk>/members/", wizard.wizard_members, name="wizard-members"),
    path("wizard/<int:pk>/method/", wizard.wizard_method, name="wizard-method"),
    path("wizard/<int:pk>/goals/", wizard.wizard_goals, name="wizard-goals"),
    path("wizard/<int:pk>/allocation/", wizard.wizard_allocation, name="wizard-allocation"),
    path("wizard/<int:pk>/replica/", wizard.wizard_replica, name="wizard-replica"),
    path("wizard/<int:pk>/consistency/", wizard.wizard_consistency, name="wizard-consistency"),
    path("wizard/<int:pk>/summary/", wizard.wizard_summary, name="wizard-summary"),
    path("wizard/<int:pk>/cancel/", wizard.wizard_cancel, name="wizard-cancel"),
    path("capacity/", capacity.capacity_overview, name="capacity"),
    path("jobs/", jobs.job_list, name="job-list"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel, name="job-cancel"),
]
