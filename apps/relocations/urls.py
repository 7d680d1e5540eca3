from django.urls import path

from apps.relocations import views

app_name = "relocations"
urlpatterns = [
    path("", views.relocation_list, name="list"),
    path("new/", views.relocation_create, name="create"),
    path("<int:pk>/", views.relocation_detail, name="detail"),
    path("<int:pk>/confirm-key/", views.relocation_confirm_key, name="confirm-key"),
    path("<int:pk>/install-key/", views.relocation_install_key, name="install-key"),
    path("<int:pk>/inspect/", views.relocation_inspect, name="inspect"),
    path("<int:pk>/plan/", views.relocation_plan, name="plan"),
    path("<int:pk>/run/", views.relocation_run, name="run"),
    path("<int:pk>/cancel/", views.relocation_cancel, name="cancel"),
    path("<int:pk>/rollback/", views.relocation_rollback, name="rollback"),
    path("<int:pk>/inspections/<int:inspection_id>/", views.inspection_detail, name="inspection"),
]
