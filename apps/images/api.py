"""The registry in the API, for ops: GET what is set (never the password: whether one is), PUT
new settings, checked against the registry before they are saved, as on the page."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.images import registry_settings
from apps.images.models import Registry


class RegistrySerializer(serializers.Serializer[Registry]):
    url = serializers.CharField(allow_blank=True, max_length=300, help_text="https://host:port; empty: none")
    username = serializers.CharField(allow_blank=True, max_length=150, required=False, default="")
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=1024,
        help_text="Left out, null or empty: the password set before stays.",
    )
    clear_password = serializers.BooleanField(write_only=True, required=False, default=False)
    ca_pem = serializers.CharField(allow_blank=True, max_length=65536, required=False, default="")
    enabled = serializers.BooleanField(required=False, default=True)
    password_set = serializers.BooleanField(source="has_password", read_only=True)
    checked_at = serializers.DateTimeField(read_only=True)


class RegistryView(APIView):
    """The image registry publishing goes through (ops only)."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(responses=RegistrySerializer)
    def get(self, request: Request) -> Response:
        return Response(RegistrySerializer(registry_settings.registry_get()).data)

    @extend_schema(request=RegistrySerializer, responses=RegistrySerializer)
    def put(self, request: Request) -> Response:
        given = RegistrySerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(given.validated_data)
        try:
            row = registry_settings.registry_save(
                user=request.user,
                url=data["url"],
                username=data["username"],
                password=data.get("password") or None,
                clear_password=data["clear_password"],
                ca_pem=data["ca_pem"],
                enabled=data["enabled"],
            )
        except DjangoValidationError as exc:
            raise ValidationError(
                exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
            ) from exc
        return Response(RegistrySerializer(row).data)
