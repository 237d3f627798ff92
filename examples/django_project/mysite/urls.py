"""URLs of the example project: the guestbook form and the admin."""

from django.contrib import admin
from django.urls import path

from guestbook import views

urlpatterns = [
    path("", views.sign, name="sign"),
    path("entries/", views.entries, name="entries"),
    path("admin/", admin.site.urls),
]
