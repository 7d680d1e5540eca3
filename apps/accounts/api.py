"""REST API: the caller's own API tokens. GET lists them (never a key), POST makes one (its key
in that answer only), DELETE revokes one. Making one takes a session or a read-and-write token,
and a token cannot make one that outlives it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts import tokens
from apps.accounts.models import ApiToken
from portal.api import Pagination, service_call


class ApiTokenSerializer(serializers.ModelSerializer):
    state = serializers.SerializerMethodField(help_text="active, expired or revoked")

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "scope",
            "prefix",
            "state",
            "created_at",
            "expires_at",
            "last_used_at",
            "last_used_from",
            "revoked_at",
        ]
        read_only_fields = fields

    def get_state(self, token: ApiToken) -> str:
        return token.state


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    key = serializers.SerializerMethodField(help_text="The key: in this answer only, never again")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, token: ApiToken) -> str:
        return str(self.context["key"])


class ApiTokenCreateSerializer(serializers.Serializer):
    # Free text: the service checks names and scopes, so the page and the API say the same.
    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    scope = serializers.CharField(required=False, allow_blank=True, help_text="read or write")
    expires_in_days = serializers.IntegerField(
        required=False, help_text="Whole days from now, 1 to API_TOKEN_MAX_DAYS (365 by default)"
    )
    expires_at = serializers.DateTimeField(
        required=False,
        help_text="Or a moment (ISO 8601); a date alone means 00:00 on it in the portal's time zone",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        days, moment = attrs.get("expires_in_days"), attrs.get("expires_at")
        top = settings.API_TOKEN_MAX_DAYS
        if days is not None and moment is not None:
            raise serializers.ValidationError({"expires_at": "Give expires_in_days or expires_at, not both."})
        if days is None and moment is None:
            raise serializers.ValidationError(
                {
                    "expires_in_days": f"Required: expires_in_days (1 to {top}) or expires_at (a date or moment)."
                }
            )
        if days is not None:
            try:
                attrs["expires_at"] = tokens.expires_after(days)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"expires_in_days": exc.messages}) from exc
        return attrs


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Your own API tokens, newest first (ops see everyone's in the Django admin)."""

    serializer_class = ApiTokenSerializer
    pagination_class = Pagination
    queryset = ApiToken.objects.none()  # for the schema: its generator has no user

    def get_queryset(self) -> QuerySet[ApiToken]:
        return tokens.api_tokens_of(self.request.user)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        """Make a token; its key is in this answer only. Needs a session or a read-and-write
        token, and a token cannot make a token that expires after itself."""
        body = ApiTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        created = service_call(
            tokens.api_token_create,
            user=request.user,
            name=data.get("name", ""),
            scope=data.get("scope", ""),
            expires_at=data["expires_at"],
            made_with=request.auth if isinstance(request.auth, ApiToken) else None,
        )
        answer = ApiTokenCreatedSerializer(created.token, context={"key": created.key})
        return Response(answer.data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Revoke the token at once (it stays listed, as revoked)."""
        service_call(tokens.api_token_revoke, user=request.user, token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
