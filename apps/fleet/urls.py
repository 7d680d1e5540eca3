from django.urls import path

from apps.fleet import views

# The namespace stays "hosts": these are the ops pages for hosts, whatever package holds them.
app_name = "hosts"
urlpatterns = [
    path("", views.host_list, name="list"),
    path("planner/", views.planner_page, name="planner"),
    path("planner/apply/", views.planner_apply, name="planner-apply"),
    path("spread/", views.spread_card, name="spread"),
    path("spread/<int:app_id>/", views.spread_app, name="spread-app"),
    path("<int:pk>/", views.host_detail, name="detail"),
    path("<int:pk>/confirm-key/", views.host_confirm_key, name="confirm-key"),
    path("<int:pk>/refetch-key/", views.host_refetch_key, name="refetch-key"),
    path("<int:pk>/probe/", views.host_probe, name="probe"),
    path("<int:pk>/fix-network/", views.host_fix_network, name="fix-network"),
    path("<int:pk>/override/", views.host_override, name="override"),
    path("<int:pk>/fix-networks/", views.host_fix_networks, name="fix-networks"),
    path("<int:pk>/drain/", views.host_drain, name="drain"),
    path("<int:pk>/drain/progress/", views.host_drain_progress, name="drain-progress"),
    path("<int:pk>/activate/", views.host_activate, name="activate"),
    path("<int:pk>/prepare/", views.host_prepare, name="prepare"),
    path("<int:pk>/prepare/progress/", views.host_prepare_progress, name="prepare-progress"),
    path("<int:pk>/volumes/<int:volume_id>/purge/", views.host_purge_volume, name="purge-volume"),
]
