from django.urls import path

from recovery.views import browse, calendar, find, status, wizard

app_name = "recovery"
urlpatterns = [
    path("", find.recovery_overview, name="overview"),
    path("vms/<int:pk>/", calendar.vm_calendar, name="vm"),
    path("vms/<int:pk>/day/", calendar.day_points, name="day"),
    path("points/<int:pk>/recover/", wizard.start_recovery, name="start"),
    path("points/<int:pk>/download/", browse.download, name="download"),
    path("drafts/<int:pk>/", wizard.wizard, name="wizard"),
    path("drafts/<int:pk>/browse/", browse.browse, name="browse"),
    path("drafts/<int:pk>/recover/", wizard.submit, name="submit"),
    path("drafts/<int:pk>/discard/", wizard.discard, name="discard"),
    path("jobs/<int:pk>/", status.recovery_status, name="status"),
]
