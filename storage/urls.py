from django.urls import path

from storage import views

app_name = "storage"
urlpatterns = [
    path("", views.datastore_list, name="datastore-list"),
    path("<int:pk>/", views.datastore_detail, name="datastore-detail"),
    path("<int:pk>/<slug:task>/", views.datastore_maintenance, name="datastore-maintenance"),
]
