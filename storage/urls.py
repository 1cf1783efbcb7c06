from django.urls import path

from storage.views import datastores, pool

app_name = "storage"
urlpatterns = [
    path("", pool.overview, name="datastore-list"),
    path("volumes/add/", pool.volume_add, name="volume-add"),
    path("volumes/<int:pk>/", pool.volume_detail, name="volume-detail"),
    path("volumes/<int:pk>/datastores/add/", pool.datastore_add, name="datastore-add"),
    path("<int:pk>/", datastores.datastore_detail, name="datastore-detail"),
    path("<int:pk>/colocation/", datastores.datastore_colocation, name="datastore-colocation"),
    path("<int:pk>/recovery-key/", datastores.datastore_recovery_key, name="datastore-recovery-key"),
    path("<int:pk>/<slug:task>/", datastores.datastore_maintenance, name="datastore-maintenance"),
]
