from django.urls import path

from apps.catalog import image_views

app_name = "images"
urlpatterns = [
    path("", image_views.image_list, name="list"),
    path("<int:pk>/publish/", image_views.image_publish, name="publish"),
    path("<int:pk>/roll/", image_views.image_roll, name="roll"),
]
