from django.contrib.auth import views as auth_views
from django.urls import include, path

from backupsite import dashboard

urlpatterns = [
    path("", dashboard.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("management/", dashboard.management, name="management"),
    path("protection/", include("protection.urls")),
    path("recovery/", include("recovery.urls")),
    path("storage/", include("storage.urls")),
]

handler404 = "backupsite.dashboard.not_found"
handler403 = "backupsite.dashboard.forbidden"
handler500 = "backupsite.dashboard.server_error"
