"""Reading registry API answers: JSON bodies that may not be JSON, and paged lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import RegistryError

if TYPE_CHECKING:
    import requests


def json_object(resp: requests.Response, what: str) -> dict[str, Any]:
    """RESP's body as a JSON object, or a RegistryError saying WHAT is not one (a foreign
    image's config blob, say): the caller decides whether that stops it."""
    try:
        data = resp.json()
    except ValueError:
        raise RegistryError(f"{what} is not JSON: {resp.content[:80]!r}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{what} is not a JSON object: {resp.text[:80]}")
    return data


def next_page(resp: requests.Response, scheme: str, host: str, repository: str) -> str | None:
    """The URL of the page after RESP (its Link header, rel="next"), or None on the last page.
    Only on the same registry: the credentials must not follow a link to another host."""
    link = resp.links.get("next", {}).get("url")
    if not link:
        return None
    if link.startswith("/"):
        return f"{scheme}://{host}{link}"
    if not link.startswith(f"{scheme}://{host}/"):
        raise RegistryError(f"the tag list of {repository} links its next page to another host: {link}")
    return link
