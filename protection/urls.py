from django.urls import path

from protection.views import inventory, jobs

app_name = "protection"
urlpatterns = [
    path("", inventory.protection_overview, name="overview"),
    path("hosts/<int:pk>/", inventory.host_detail, name="host-detail"),
    path("vms/<int:pk>/", inventory.vm_detail, name="vm-detail"),
    path("groups/<int:pk>/", inventory.group_detail, name="group-detail"),
    path("jobs/", jobs.job_list, name="job-list"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel, name="job-cancel"),
]
