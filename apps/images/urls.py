from django.urls import path

from apps.images import registry_views, views

app_name = "images"
urlpatterns = [
    path("", views.image_list, name="list"),
    path("new/", views.image_new, name="new"),
    path("<int:pk>/cancel/", views.image_cancel, name="cancel"),
    path("<int:pk>/publish/", views.image_publish, name="publish"),
    path("<int:pk>/roll/", views.image_roll, name="roll"),
    path("<int:pk>/new-version/", views.image_new_version, name="new-version"),
    path("<int:pk>/recommend/", views.image_recommend, name="recommend"),
    path("registry/", registry_views.registry_page, name="registry"),
]
