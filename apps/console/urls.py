from django.urls import path

from apps.console import views

app_name = "console"

urlpatterns = [
    path("<slug:slug>/instances/<int:slot>/", views.instance_page, name="instance"),
    path("<slug:slug>/instances/<int:slot>/exec/", views.instance_exec, name="exec"),
    path("<slug:slug>/instances/<int:slot>/logs/", views.instance_logs, name="logs"),
    path("<slug:slug>/instances/<int:slot>/terminal/", views.terminal_page, name="terminal"),
    path("<slug:slug>/logs/", views.app_logs, name="app-logs"),
    path("<slug:slug>/commands/", views.command_save, name="command-save"),
    path("<slug:slug>/commands/<slug:name>/delete/", views.command_delete, name="command-delete"),
    path("<slug:slug>/exec-audit/", views.exec_audit, name="audit"),
]
