"""The cloud secret backends: Google Secret Manager and AWS Secrets Manager.

:func:`bq2pg.config.secrets.resolve` calls :func:`gcp_secret` for ``${gcp:...}`` and
:func:`aws_secret` for ``${aws:...}``. Their client libraries are optional extras
(``bq2pg[gcp-secrets]``, ``bq2pg[aws]``) and are imported on first use.

Endpoints, for private endpoints and for tests:

- ``BQ2PG_GCP_SECRETS_ENDPOINT`` (``host:port``): Secret Manager elsewhere. A loopback host or
  an ``http://`` address is spoken to in plain gRPC without credentials (a local fake); any
  other over TLS with Application Default Credentials.
- ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL``: read by boto3 itself. The region
  is the ARN's, else ``AWS_REGION``, ``AWS_DEFAULT_REGION`` or the AWS profile's.

Each call is one attempt bounded by :data:`SECRET_CALL_TIMEOUT_S`, and every failure becomes a
:class:`~bq2pg.errors.SecretError` opening with its case (``missing``, ``denied``,
``unreachable``, ...). Neither the services' own messages nor the libraries' DEBUG logs of
response bodies are passed on: they are where a value could leak.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from typing import Any

from bq2pg.config.secrets import (
    DENIED,
    FAILED,
    MALFORMED,
    MISSING,
    NOT_INSTALLED,
    UNREACHABLE,
    secret_error,
    utf8_text,
)
from bq2pg.errors import SecretError

#: Deadline of one secret read, connection included. Both services answer in well under a
#: second; ten seconds covers a cold TLS handshake on a slow link. No retry loop: secrets are
#: read when a run starts, and a retry would only delay the message telling what is wrong.
SECRET_CALL_TIMEOUT_S = 10.0

#: Secret Manager's endpoint (``host:port``) instead of secretmanager.googleapis.com.
GCP_ENDPOINT_ENV = "BQ2PG_GCP_SECRETS_ENDPOINT"

_GCP_NAME = re.compile(r"projects/[^/\s]+/secrets/[^/\s]+(?:/versions/[^/\s]+)?")

# botocore codes meaning "not allowed" (IAM, KMS, or credentials the service does not accept).
_AWS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "DecryptionFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_AWS_BUSY = frozenset({"ThrottlingException", "Throttling", "RequestTimeout", "ServiceUnavailable"})

# Loggers that write response bodies (a secret) at DEBUG: botocore's parser, and the Secret
# Manager transports' request/response logging (GOOGLE_SDK_PYTHON_LOGGING_SCOPE).
_PAYLOAD_LOGGERS = (
    "botocore.parsers",
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc",
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest",
)


class _NoPayloads(logging.Filter):
    """Drops the DEBUG records of a logger that writes response bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _name in _PAYLOAD_LOGGERS:
    logging.getLogger(_name).addFilter(_NoPayloads())


def gcp_secret(name: str) -> str:
    """The payload of a Secret Manager version, as UTF-8 text.

    Args:
        name: ``projects/P/secrets/S/versions/V``, or ``projects/P/secrets/S`` for
            ``versions/latest``.

    Raises:
        SecretError: malformed name, missing, denied, unreachable or not installed.
    """
    if not _GCP_NAME.fullmatch(name):
        raise secret_error(
            MALFORMED,
            f"{name} is not a Secret Manager name",
            hint="write projects/PROJECT/secrets/SECRET[/versions/VERSION]",
        )
    if "/versions/" not in name:
        name += "/versions/latest"
    try:
        import google.api_core.exceptions as gexc
        import google.cloud.secretmanager_v1 as secretmanager
    except ImportError:
        raise secret_error(
            NOT_INSTALLED,
            "Google Secret Manager needs google-cloud-secret-manager",
            hint="pip install 'bq2pg[gcp-secrets]'",
        ) from None
    try:
        with _gcp_client(secretmanager) as client:
            response = client.access_secret_version(
                name=name, retry=None, timeout=SECRET_CALL_TIMEOUT_S
            )
    except gexc.NotFound:
        raise secret_error(
            MISSING,
            f"Secret Manager has no {name} (or it is disabled or destroyed)",
            hint="check the name: gcloud secrets versions list SECRET --project PROJECT",
        ) from None
    except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
        raise secret_error(
            DENIED,
            f"Secret Manager refused access to {name} ({_status(exc)})",
            hint="grant roles/secretmanager.secretAccessor on the secret to bq2pg's account",
        ) from None
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError):
        raise secret_error(
            UNREACHABLE,
            f"Secret Manager refused the connection or did not answer within "
            f"{SECRET_CALL_TIMEOUT_S:g} s",
            hint=f"check the network, or {GCP_ENDPOINT_ENV}",
        ) from None
    except gexc.GoogleAPICallError as exc:
        raise secret_error(FAILED, f"Secret Manager answered {_status(exc)} for {name}") from None
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
        if exc.__class__.__name__ == "DefaultCredentialsError":
            raise secret_error(
                DENIED,
                "no Google credentials found",
                hint="run `gcloud auth application-default login` or attach a service account",
            ) from None
        raise
    return utf8_text(response.payload.data, name)


def aws_secret(name: str) -> str:
    """The value of an AWS Secrets Manager secret (its current version), as text.

    Args:
        name: a secret id or ARN, optionally ``#field`` to pick one key of a JSON object.

    Raises:
        SecretError: missing (or no such field), denied, unreachable, not installed, or no
            region.
    """
    secret_id, hash_sign, field = name.partition("#")
    if not secret_id or (hash_sign and not field):
        raise secret_error(MALFORMED, f"{name} is not a secret id or ARN [#field]")
    try:
        import boto3
        import botocore.exceptions as bexc
        from botocore.config import Config
    except ImportError:
        raise secret_error(
            NOT_INSTALLED, "AWS Secrets Manager needs boto3", hint="pip install 'bq2pg[aws]'"
        ) from None
    config = Config(
        connect_timeout=SECRET_CALL_TIMEOUT_S,
        read_timeout=SECRET_CALL_TIMEOUT_S,
        retries={"total_max_attempts": 1},
    )
    try:
        session = boto3.session.Session()
        region = _aws_region(secret_id, session.region_name)
        client = session.client("secretsmanager", region_name=region, config=config)
        try:
            response = client.get_secret_value(SecretId=secret_id)
        finally:
            client.close()
    except bexc.ClientError as exc:
        raise _aws_error(secret_id, exc.response) from None
    except (bexc.NoCredentialsError, bexc.PartialCredentialsError):
        raise secret_error(
            DENIED,
            "no AWS credentials found",
            hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run with an instance/task role",
        ) from None
    except (bexc.ConnectionError, bexc.HTTPClientError):  # connect/read timeouts, refused
        raise secret_error(
            UNREACHABLE,
            f"AWS Secrets Manager refused the connection or did not answer within "
            f"{SECRET_CALL_TIMEOUT_S:g} s",
            hint="check the network, or AWS_ENDPOINT_URL_SECRETS_MANAGER",
        ) from None
    except bexc.BotoCoreError as exc:
        raise secret_error(FAILED, f"boto3 failed: {type(exc).__name__}") from None
    except ValueError:  # botocore's "Invalid endpoint"
        raise secret_error(
            FAILED, "the AWS endpoint is no URL", hint="check AWS_ENDPOINT_URL_SECRETS_MANAGER"
        ) from None
    text = response.get("SecretString")
    if text is None:
        text = utf8_text(response.get("SecretBinary") or b"", secret_id)
    return _field(text, secret_id, field) if field else text


def _gcp_client(secretmanager: Any) -> Any:
    """A Secret Manager client for :data:`GCP_ENDPOINT_ENV`, or for Google's endpoint."""
    endpoint = os.environ.get(GCP_ENDPOINT_ENV, "").strip()
    if not endpoint:
        return secretmanager.SecretManagerServiceClient()
    host_port = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
    if endpoint.startswith("http://") or _is_loopback(host_port):
        import grpc

        # a channel without TLS carries no credentials: the anonymous caller of a local fake
        transport = secretmanager.services.secret_manager_service.transports
        channel = grpc.insecure_channel(host_port)
        return secretmanager.SecretManagerServiceClient(
            transport=transport.SecretManagerServiceGrpcTransport(channel=channel)
        )
    from google.api_core.client_options import ClientOptions

    return secretmanager.SecretManagerServiceClient(
        client_options=ClientOptions(api_endpoint=host_port)
    )


def _status(exc: Any) -> str:
    """The gRPC status name of a ``google.api_core`` error (``PERMISSION_DENIED``)."""
    status = getattr(exc, "grpc_status_code", None)
    return status.name if status is not None else str(getattr(exc, "code", "?"))


def _is_loopback(host_port: str) -> bool:
    """Whether ``host:port`` (``[::1]:port`` for IPv6) names this machine."""
    host = host_port.rsplit(":", 1)[0] if ":" in host_port else host_port
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _aws_region(secret_id: str, configured: str | None) -> str:
    """The region to ask: the ARN's, else AWS_REGION, AWS_DEFAULT_REGION or the profile's."""
    if secret_id.startswith("arn:"):
        parts = secret_id.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    region = os.environ.get("AWS_REGION") or configured
    if not region:
        raise secret_error(
            MISSING,
            f"no AWS region for {secret_id}",
            hint="set AWS_REGION or AWS_DEFAULT_REGION, or give the secret's ARN",
        )
    return region


def _aws_error(secret_id: str, response: Any) -> SecretError:
    """The :class:`SecretError` for a Secrets Manager error answer (its code, not its text)."""
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code", "?"))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in ("ResourceNotFoundException", "InvalidRequestException"):
        # InvalidRequestException: the secret is scheduled for deletion, or has no current value
        return secret_error(
            MISSING,
            f"AWS Secrets Manager has no current value of {secret_id} ({code})",
            hint="check the id: aws secretsmanager describe-secret --secret-id ID",
        )
    if code in _AWS_DENIED or status in (401, 403):  # 403 alone: an error body not in JSON
        return secret_error(
            DENIED,
            f"AWS refused access to {secret_id} ({code})",
            hint="allow secretsmanager:GetSecretValue (and kms:Decrypt for a customer key) to "
            "bq2pg's identity",
        )
    if code in _AWS_BUSY or status >= 500:
        return secret_error(UNREACHABLE, f"AWS Secrets Manager answered {code} ({status})")
    return secret_error(FAILED, f"AWS Secrets Manager answered {code} for {secret_id}")


def _field(text: str, secret_id: str, field: str) -> str:
    """One key of a JSON object secret, as text (other JSON values in their JSON form)."""
    try:
        data = json.loads(text)
    except ValueError:  # raised below, outside this block: the decoder error holds the text
        data = None
    if not isinstance(data, dict):
        raise secret_error(MISSING, f"{secret_id} is no JSON object, so it has no field {field}")
    if field not in data:
        raise secret_error(MISSING, f"{secret_id} has no field {field}")
    value = data[field]
    return value if isinstance(value, str) else json.dumps(value)
