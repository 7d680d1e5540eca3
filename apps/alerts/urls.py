from django.urls import path

from apps.alerts import views

app_name = "alerts"

urlpatterns = [
    path("", views.alert_list, name="list"),
    path("<int:pk>/", views.alert_detail, name="detail"),
    path("read/", views.read_all, name="read"),
    path("badge/", views.badge, name="badge"),
    path("rules/", views.rules, name="rules"),
    path("webhooks/", views.webhooks, name="webhooks"),
    path("webhooks/<int:pk>/", views.webhook_detail, name="webhook"),
    path("webhooks/<int:pk>/delete/", views.webhook_remove, name="webhook-delete"),
]
