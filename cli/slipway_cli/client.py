"""The one door to the portal: every request goes through `Client`, which turns whatever goes
wrong (a refused token, DRF's error bodies, a portal that cannot be reached) into a CliError
with the API's own message and the exit code scripts rely on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from slipway_cli import __version__
from slipway_cli.config import TOKEN_VARIABLE, Credentials
from slipway_cli.errors import AUTH, FAILED, UNREACHABLE, CliError

TIMEOUT = 30.0
# Status codes a proxy in front of the portal answers when the portal itself is down.
PROXY_DOWN = {502, 503, 504}


class ApiError(CliError):
    """The API answered with an error; `status` and `data` let a command react to one (409)."""

    def __init__(self, message: str, code: int, status: int, data: Any, detail: str = "") -> None:
        super().__init__(message, code)
        self.status = status
        self.data = data
        self.detail = detail or message  # the API's own words, without our advice around them


def drf_message(data: Any, prefix: str = "") -> list[str]:
    """DRF's error bodies as lines: {"detail": m} is m; {field: [m, ...]} is "field: m" per
    message; nested serializers' errors are "field.inner: m"; lists are their items."""
    if isinstance(data, dict):
        lines: list[str] = []
        for key, value in data.items():
            name = "" if key in ("detail", "non_field_errors") else str(key)
            inner = f"{prefix}.{name}" if prefix and name else (name or prefix)
            lines += drf_message(value, inner)
        return lines
    if isinstance(data, list):
        return [line for item in data for line in drf_message(item, prefix)]
    text = "" if data is None else str(data)
    return [f"{prefix}: {text}" if prefix else text]


class Client:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.url = credentials.url
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1/",
            headers={
                "Authorization": f"Token {credentials.token}",
                # Errors as JSON even from the logs endpoints, whose lines are text.
                "Accept": "application/json",
                "User-Agent": f"slipway-cli/{__version__}",
            },
            timeout=TIMEOUT,
            # A redirect would drop a POST's body, and may take the token to another address.
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            raise CliError(
                f"Cannot reach the portal at {self.url}: no answer in time.", UNREACHABLE
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(f"Cannot reach the portal at {self.url}: {reason}", UNREACHABLE) from None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            response = self.http.request(method, path, **kwargs)
        self.check(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body if body is not None else {}, **kwargs)
        return response.json() if response.content else None

    def get_all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a list, across pages: paginated lists answer {"count", "results"}, the
        apps' own sub-lists a plain array."""
        items: list[Any] = []
        while True:
            page = self.get(path, **params, limit=1000, offset=len(items))
            if isinstance(page, list):
                return page
            results = page.get("results", [])
            items += results
            # Offsets rather than the `next` link: behind a proxy that link may name another host.
            if not results or len(items) >= int(page.get("count", 0)):
                return items

    @contextlib.contextmanager
    def stream(self, path: str, params: dict[str, Any], timeout: httpx.Timeout) -> Iterator[httpx.Response]:
        with self._reaching(), self.http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.status_code >= 400 or response.is_redirect:
                response.read()
                self.check(response)
            yield response

    def check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        if response.is_redirect:
            target = response.headers.get("Location", "elsewhere")
            raise CliError(
                f"{self.url} redirects to {target}: log in with the portal's own address.", UNREACHABLE
            )
        data = _json_or_none(response)
        where = f"{response.request.method} {response.request.url}"
        if status in PROXY_DOWN:
            raise ApiError(
                f"Cannot reach the portal at {self.url}: {status} {response.reason_phrase}.",
                UNREACHABLE,
                status,
                data,
            )
        if data is None:
            if status == 404:
                # Django's HTML 404: nothing answers this path, so this is not a Slipway portal's API.
                raise ApiError(
                    f"{self.url} answered 404 for {where} with a page, not the Slipway API: "
                    "is it the portal's address?",
                    UNREACHABLE,
                    status,
                    data,
                )
            raise ApiError(
                f"The portal failed on {where}: {status} {response.reason_phrase}.", FAILED, status, data
            )
        message = "\n".join(drf_message(data)) or f"{status} {response.reason_phrase}"
        if status == 401:
            fix = (
                f"fix {TOKEN_VARIABLE}"
                if self.credentials.token_from_env
                else f"log in again: slipway login {self.url}"
            )
            raise ApiError(f"The portal refused the token: {message} ({fix})", AUTH, status, data, message)
        raise ApiError(message, FAILED, status, data)


def _json_or_none(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None
