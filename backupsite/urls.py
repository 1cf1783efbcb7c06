from django.contrib.auth import views as auth_views
from django.urls import include, path

from backupsite import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("management/", views.management, name="management"),
    path("protection/", include("protection.urls")),
    path("recovery/", include("recovery.urls")),
    path("storage/", include("storage.urls")),
]

handler404 = "backupsite.views.not_found"
handler403 = "backupsite.views.forbidden"
handler500 = "backupsite.views.server_error"
