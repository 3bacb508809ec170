from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.lab import views
from webapp.lab.security import ThrottledLoginView

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("favicon.svg", views.favicon, name="favicon"),
    path("favicon.ico", views.favicon),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("webapp.lab.urls")),
]
