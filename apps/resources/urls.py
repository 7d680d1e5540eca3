from django.urls import path

from apps.resources import views

app_name = "resources"

urlpatterns = [
    path("approvals/", views.approvals, name="approvals"),
    path("<int:pk>/approve/", views.decide, {"approve": True}, name="approve"),
    path("<int:pk>/reject/", views.decide, {"approve": False}, name="reject"),
    path("<int:pk>/cancel/", views.cancel, name="cancel"),
    path("<int:pk>/retry/", views.retry, name="retry"),
    path("apps/<slug:slug>/request/", views.file_request, name="request"),
    path("apps/<slug:slug>/card/", views.card, name="card"),
]
