from django.urls import path, re_path

from apps.applications import release_views, views

app_name = "catalog"
urlpatterns = [
    path("", views.app_list, name="list"),
    path("new/", views.app_create, name="create"),
    path("<slug:slug>/", views.app_detail, name="detail"),
    path("<slug:slug>/edit/", views.app_edit, name="edit"),
    path("<slug:slug>/scale/", views.app_scale, name="scale"),
    path("<slug:slug>/upgrade/", views.app_upgrade, name="upgrade"),
    path("<slug:slug>/releases/", release_views.app_releases, name="releases"),
    path("<slug:slug>/releases/<int:number>/rollback/", release_views.app_rollback, name="rollback"),
    path("<slug:slug>/addresses/", views.app_address, name="address"),
    path("<slug:slug>/delete/", views.app_delete, name="delete"),
    path("<slug:slug>/activity/", views.app_activity, name="activity"),
    path("<slug:slug>/move/", views.instance_move, name="move"),
    re_path(
        r"^(?P<slug>[-a-z0-9]+)/instances/(?P<pk>[0-9]+)/(?P<action>start|stop|restart|remove)/$",
        views.instance_action,
        name="instance-action",
    ),
]
