"""What the cloud SDKs raise while getting registry credentials (botocore for ECR,
azure-core/identity for ACR), as this package's errors by cause (AUDIT-RELIABILITY.md M7):
a cloud refusing who we are fails at once, the way to its API failing is retried; both
are infra, not the build's. By class name, so that neither SDK is imported for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.nightly_ci.errors import NightlyCiError, RegistryAuthError, RegistryUnavailable

if TYPE_CHECKING:
    from include.nightly_ci.plan import Registry

# A cloud refusing who we are (AWS's codes, HTTP 401/403): retrying can't help.
_AWS_AUTH_CODES = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "AccessDeniedException",
    "AccessDenied",
}
_AUTH_TYPES = {"NoCredentialsError", "PartialCredentialsError", "ClientAuthenticationError"}
# The way to the cloud's API, not who we are: worth retrying.
_UNAVAILABLE_TYPES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ServiceRequestError",
                      "ServiceResponseError"}  # fmt: skip


def cloud_failure(reg: Registry, exc: BaseException) -> NightlyCiError | None:
    """EXC, raised by a cloud SDK (botocore, azure-core/identity) while getting REG's
    credentials, as RegistryAuthError (fails at once; infra) or RegistryUnavailable
    (retried; infra); None for anything else. By class name, so that neither SDK is
    imported for it."""
    names = {c.__name__ for c in type(exc).__mro__}
    where = f"registry {reg.name!r}: the credentials of Airflow connection {reg.conn_id!r}"
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if names & _AUTH_TYPES or ("ClientError" in names and (code in _AWS_AUTH_CODES or status in (401, 403))):
        return RegistryAuthError(f"{where} were refused ({type(exc).__name__}): {exc}")
    if names & _UNAVAILABLE_TYPES or ("ClientError" in names and (status or 0) >= 500):
        return RegistryUnavailable(f"{where} could not be had ({type(exc).__name__}): {exc}")
    return None
