"""Company sign-in settings (docs/sign-in.md): the environment's LDAP and OIDC variables turned
into django-auth-ldap's and mozilla-django-oidc's settings, and the group mapping (which
directory groups make ops, which give a team role), checked at start-up with messages that say
what is allowed.

settings.py reads the variables (so the docs test sees every name) and passes them here. Nothing
here touches the database or the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ROLES = ("developer", "lead")
# Apps' team slugs (apps.accounts.models.slug_validator), repeated here: settings load first.
SLUG = re.compile(r"[a-z][a-z0-9-]{1,39}")
GROUP_TYPES = {
    "groupOfNames": "GroupOfNamesType",
    "groupOfUniqueNames": "GroupOfUniqueNamesType",
    "posixGroup": "PosixGroupType",
    "nestedGroupOfNames": "NestedGroupOfNamesType",
    "activeDirectory": "ActiveDirectoryGroupType",
    "nestedActiveDirectory": "NestedActiveDirectoryGroupType",
}
TEAM_ENTRY_EXAMPLE = "cn=alpha-devs,ou=groups,dc=example,dc=com => alpha:developer"


@dataclass(frozen=True)
class GroupMap:
    """What the company's groups grant. Groups are LDAP DNs (normalized: see `dn_key`) or
    OIDC group names as the provider sends them."""

    ops: frozenset[str]
    # (group, team slug, role)
    teams: tuple[tuple[str, str, str], ...]

    @property
    def team_slugs(self) -> frozenset[str]:
        """The teams whose memberships the mapping manages: for a user who signs in through it,
        these follow the groups; memberships in other teams are left alone."""
        return frozenset(slug for _, slug, _ in self.teams)

    def grants(self, groups: set[str]) -> tuple[bool, dict[str, str]]:
        """(ops?, {team slug: role}) for a user in `groups`; lead wins over developer."""
        roles: dict[str, str] = {}
        for group, slug, role in self.teams:
            if group in groups and roles.get(slug) != "lead":
                roles[slug] = role
        return bool(self.ops & groups), roles


NOTHING = GroupMap(ops=frozenset(), teams=())


def dn_key(dn: str) -> str:
    """One spelling of a DN, to compare the mapping's DNs with the directory's: case and the
    spaces around separators do not matter. ValueError if it is not a DN."""
    import ldap.dn  # python-ldap: only when LDAP is configured

    try:
        parts = ldap.dn.str2dn(dn.strip())
    except ldap.DECODING_ERROR:
        raise ValueError(f"{dn!r} is not a distinguished name") from None
    if not parts:
        raise ValueError("an empty distinguished name")
    return ldap.dn.dn2str(parts).lower()


def _entries(value: str) -> list[str]:
    # ';' and newlines separate entries: a DN has ',' and '=' but never a bare ';' (RFC 4514
    # escapes it as '\;').
    return [entry.strip() for entry in re.split(r"(?<!\\);|\n", value) if entry.strip()]


def parse_ops_groups(name: str, value: str, *, dns: bool) -> frozenset[str]:
    groups: set[str] = set()
    for entry in _entries(value):
        try:
            groups.add(dn_key(entry) if dns else entry)
        except ValueError as exc:
            raise ValueError(
                f"{name}: {exc}. Give group DNs separated by ';', e.g. 'cn=ops,ou=groups,dc=example,dc=com'"
            ) from None
    return frozenset(groups)


def parse_team_groups(name: str, value: str, *, dns: bool) -> tuple[tuple[str, str, str], ...]:
    """`GROUP => TEAM:ROLE` entries separated by ';' or newlines."""
    example = TEAM_ENTRY_EXAMPLE if dns else "alpha-devs => alpha:developer"
    allowed = (
        f"Each entry is GROUP => TEAM:ROLE, entries separated by ';' or new lines; TEAM is a "
        f"team slug (2-40 lowercase letters, digits, '-'), ROLE is developer or lead; e.g. '{example}'"
    )
    teams: list[tuple[str, str, str]] = []
    seen: dict[str, str] = {}
    for number, entry in enumerate(_entries(value), start=1):
        group, arrow, target = entry.rpartition("=>")
        slug, colon, role = target.strip().partition(":")
        group, slug, role = group.strip(), slug.strip(), role.strip()
        problem = ""
        if not arrow or not group:
            problem = "no 'GROUP =>' before the team"
        elif not colon or not role:
            problem = f"no ':ROLE' after team {slug!r}"
        elif not SLUG.fullmatch(slug):
            problem = f"{slug!r} is not a team slug"
        elif role not in ROLES:
            problem = f"{role!r} is not a role"
        if not problem:
            try:
                group = dn_key(group) if dns else group
            except ValueError as exc:
                problem = str(exc)
        if problem:
            raise ValueError(f"{name}: entry {number} ({entry!r}): {problem}. {allowed}")
        if group in seen:
            raise ValueError(
                f"{name}: entry {number} ({entry!r}): the group is already mapped to {seen[group]}; "
                "give each group one team and role"
            )
        seen[group] = f"{slug}:{role}"
        teams.append((group, slug, role))
    return tuple(teams)


def ldap_settings(
    *,
    server_uri: str,
    bind_dn: str,
    bind_password: str,
    user_search_base: str,
    user_filter: str,
    group_search_base: str,
    group_type: str,
    start_tls: bool,
    ca_file: str,
    timeout: float,
    ops_groups: str,
    team_groups: str,
) -> dict[str, Any]:
    """django-auth-ldap's settings (AUTH_LDAP_*) and SIGNIN_LDAP_GROUPS, the group mapping."""
    import ldap
    from django_auth_ldap import config

    if not re.match(r"ldaps?://", server_uri):
        raise ValueError(
            f"LDAP_SERVER_URI={server_uri!r}: an ldap:// or ldaps:// URI, e.g. ldaps://ldap.example.com"
        )
    for setting, dn in (
        ("LDAP_USER_SEARCH_BASE", user_search_base),
        ("LDAP_GROUP_SEARCH_BASE", group_search_base),
    ):
        try:
            dn_key(dn)
        except ValueError:
            raise ValueError(
                f"{setting}={dn!r}: required with LDAP_SERVER_URI, a DN such as ou=people,dc=example,dc=com"
            ) from None
    if "%(user)s" not in user_filter or not (user_filter.startswith("(") and user_filter.endswith(")")):
        raise ValueError(
            f"LDAP_USER_FILTER={user_filter!r}: an LDAP filter with %(user)s for the name typed, "
            "e.g. (uid=%(user)s) or (sAMAccountName=%(user)s)"
        )
    if group_type not in GROUP_TYPES:
        raise ValueError(f"LDAP_GROUP_TYPE={group_type!r}: one of {', '.join(GROUP_TYPES)}")
    if not 0 < timeout <= 60:
        raise ValueError(f"LDAP_TIMEOUT={timeout}: from above 0 to 60 seconds")
    groups = GroupMap(
        ops=parse_ops_groups("LDAP_OPS_GROUPS", ops_groups, dns=True),
        teams=parse_team_groups("LDAP_TEAM_GROUPS", team_groups, dns=True),
    )
    if not groups.ops and not groups.teams:
        raise ValueError(
            "LDAP_SERVER_URI is set but neither LDAP_OPS_GROUPS nor LDAP_TEAM_GROUPS is: nobody from "
            f"the directory could sign in. Map groups, e.g. LDAP_TEAM_GROUPS='{TEAM_ENTRY_EXAMPLE}'"
        )
    options: dict[Any, Any] = {ldap.OPT_NETWORK_TIMEOUT: timeout, ldap.OPT_TIMEOUT: timeout}
    if ca_file:
        options |= {ldap.OPT_X_TLS_CACERTFILE: ca_file, ldap.OPT_X_TLS_NEWCTX: 0}
    return {
        "AUTH_LDAP_SERVER_URI": server_uri,
        "AUTH_LDAP_BIND_DN": bind_dn,
        "AUTH_LDAP_BIND_PASSWORD": bind_password,
        "AUTH_LDAP_START_TLS": start_tls,
        "AUTH_LDAP_CONNECTION_OPTIONS": options,
        "AUTH_LDAP_USER_SEARCH": config.LDAPSearch(user_search_base, ldap.SCOPE_SUBTREE, user_filter),
        "AUTH_LDAP_GROUP_SEARCH": config.LDAPSearch(group_search_base, ldap.SCOPE_SUBTREE),
        "AUTH_LDAP_GROUP_TYPE": getattr(config, GROUP_TYPES[group_type])(),
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
        "SIGNIN_LDAP_GROUPS": groups,
    }


def oidc_settings(
    *,
    client_id: str,
    client_secret: str,
    authorization_endpoint: str,
    token_endpoint: str,
    user_endpoint: str,
    jwks_endpoint: str,
    sign_algo: str,
    scopes: str,
    username_claim: str,
    groups_claim: str,
    ops_groups: str,
    team_groups: str,
) -> dict[str, Any]:
    """mozilla-django-oidc's settings (OIDC_*) and SIGNIN_OIDC_GROUPS, the group mapping."""
    endpoints = {
        "OIDC_OP_AUTHORIZATION_ENDPOINT": authorization_endpoint,
        "OIDC_OP_TOKEN_ENDPOINT": token_endpoint,
        "OIDC_OP_USER_ENDPOINT": user_endpoint,
        "OIDC_OP_JWKS_ENDPOINT": jwks_endpoint,
    }
    for setting, url in endpoints.items():
        if not re.match(r"https?://[^/\s]+", url):
            raise ValueError(
                f"{setting}={url!r}: required with OIDC_RP_CLIENT_ID, an http(s) URL from the "
                "provider's /.well-known/openid-configuration"
            )
    if not client_secret:
        raise ValueError(
            "OIDC_RP_CLIENT_SECRET (or OIDC_RP_CLIENT_SECRET_FILE): required with OIDC_RP_CLIENT_ID"
        )
    if sign_algo not in {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}:
        raise ValueError(f"OIDC_RP_SIGN_ALGO={sign_algo!r}: RS256, RS384, RS512, ES256, ES384 or ES512")
    if "openid" not in scopes.split():
        raise ValueError(
            f"OIDC_RP_SCOPES={scopes!r}: must include openid, e.g. 'openid email profile groups'"
        )
    for setting, claim in (("OIDC_USERNAME_CLAIM", username_claim), ("OIDC_GROUPS_CLAIM", groups_claim)):
        if not re.fullmatch(r"[A-Za-z0-9_.:/-]+", claim):
            raise ValueError(f"{setting}={claim!r}: a claim name, e.g. preferred_username or groups")
    groups = GroupMap(
        ops=parse_ops_groups("OIDC_OPS_GROUPS", ops_groups, dns=False),
        teams=parse_team_groups("OIDC_TEAM_GROUPS", team_groups, dns=False),
    )
    if not groups.ops and not groups.teams:
        raise ValueError(
            "OIDC_RP_CLIENT_ID is set but neither OIDC_OPS_GROUPS nor OIDC_TEAM_GROUPS is: nobody could "
            "sign in with it. Map groups, e.g. OIDC_TEAM_GROUPS='alpha-devs => alpha:developer'"
        )
    return endpoints | {
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": client_secret,
        "OIDC_RP_SIGN_ALGO": sign_algo,
        "OIDC_RP_SCOPES": scopes,
        # The provider must not hold a sign-in (a worker thread) for ever.
        "OIDC_TIMEOUT": 10,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc-callback",
        "OIDC_USE_PKCE": True,
        # Used as it is (not resolved as a URL name): a path.
        "LOGIN_REDIRECT_URL_FAILURE": "/login/",
        "SIGNIN_OIDC_GROUPS": groups,
    }
