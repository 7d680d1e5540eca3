from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from apps.accounts import signin_views
from apps.accounts import views as account_views
from apps.accounts.api import ApiTokenViewSet
from apps.alerts.api import AlertViewSet, NotificationViewSet, RuleViewSet, WebhookViewSet
from apps.applications import views as application_views
from apps.applications.api import AppViewSet, BaseImageViewSet, InstanceViewSet, OperationViewSet
from apps.audit.api import AuditEntryViewSet
from apps.console.api import ExecSessionViewSet
from apps.fleet.api import HostViewSet
from apps.images.api import RegistryView
from apps.metrics import views as metrics_views
from apps.relocations.api import RelocationViewSet
from apps.resources.api import ResourceRequestViewSet

router = DefaultRouter()
router.register("hosts", HostViewSet, basename="host")
router.register("apps", AppViewSet, basename="app")
router.register("instances", InstanceViewSet, basename="instance")
router.register("operations", OperationViewSet, basename="operation")
router.register("base-images", BaseImageViewSet, basename="base-image")
router.register("resource-requests", ResourceRequestViewSet, basename="resource-request")
router.register("exec-sessions", ExecSessionViewSet, basename="exec-session")
router.register("relocations", RelocationViewSet, basename="relocation")
router.register("alerts", AlertViewSet, basename="alert")
router.register("alert-rules", RuleViewSet, basename="alert-rule")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("tokens", ApiTokenViewSet, basename="api-token")
router.register("audit", AuditEntryViewSet, basename="audit-entry")

urlpatterns = [
    path("", account_views.home, name="home"),
    path("login/", signin_views.SignInView.as_view(), name="login"),
    path("login/oidc/", signin_views.oidc_start, name="oidc-start"),
    path("login/oidc/callback/", signin_views.oidc_callback, name="oidc-callback"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/token/", account_views.token_page, name="token"),
    path("account/token/create/", account_views.token_create, name="token-create"),
    path("account/token/<int:pk>/revoke/", account_views.token_revoke, name="token-revoke"),
    path("activity/", application_views.activity, name="activity"),
    path("apps/", include("apps.console.urls")),
    path("apps/", include("apps.applications.urls")),
    path("hosts/", include("apps.fleet.urls")),
    path("images/", include("apps.images.urls")),
    path("resources/", include("apps.resources.urls")),
    path("relocations/", include("apps.relocations.urls")),
    path("alerts/", include("apps.alerts.urls")),
    path("audit/", include("apps.audit.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/registry/", RegistryView.as_view(), name="image-registry"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", template_name="api_docs.html"),
        name="api-docs",
    ),
    path("healthz", account_views.healthz, name="healthz"),
    path("metrics", metrics_views.prometheus, name="prometheus"),
]
