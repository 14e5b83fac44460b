"""Secret managers on free local ports, for the tests of ``${gcp:...}`` and ``${aws:...}``.

- :func:`gcp_server`: a gRPC server answering Secret Manager's ``AccessSecretVersion`` with the
  client package's own message types, as the real service does (NOT_FOUND for an unknown
  version, PERMISSION_DENIED for a secret in :attr:`FakeSecretManager.denied`).
- :func:`aws_server`: moto's server mode with IAM enforcement on: a reader allowed
  ``secretsmanager:GetSecretValue``, and an outsider with no policy whom moto refuses.

Both are context managers; the tests' fixtures start and stop them.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
import grpc
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)
from moto.server import ThreadedMotoServer

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
AWS_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakeSecretManager:
    """What the fake Secret Manager holds and what it was asked.

    Attributes:
        endpoint: ``127.0.0.1:PORT``, for ``BQ2PG_GCP_SECRETS_ENDPOINT``.
        versions: payloads by version name (``projects/P/secrets/S/versions/V``).
        denied: secret names (``projects/P/secrets/S``) whose versions answer PERMISSION_DENIED.
        requests: the version names asked for, in order.
    """

    endpoint: str = ""
    versions: dict[str, bytes] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)

    def add(self, secret: str, value: str | bytes) -> str:
        """Add a version of ``secret`` (``projects/P/secrets/S``), also as ``latest``; its name."""
        number = 1 + sum(1 for v in self.versions if v.startswith(f"{secret}/versions/"))
        payload = value.encode() if isinstance(value, str) else value
        self.versions[f"{secret}/versions/latest"] = payload
        self.versions[f"{secret}/versions/{number}"] = payload
        return f"{secret}/versions/{number}"

    def access(
        self, request: AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> AccessSecretVersionResponse:
        """``AccessSecretVersion``, with the real service's status codes and messages."""
        self.requests.append(request.name)
        if request.name.split("/versions/")[0] in self.denied:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'secretmanager.versions.access' denied for resource "
                f"'{request.name}' (or it may not exist).",
            )
        if request.name not in self.versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
        return AccessSecretVersionResponse(
            name=request.name, payload=SecretPayload(data=self.versions[request.name])
        )


@contextmanager
def gcp_server() -> Iterator[FakeSecretManager]:
    """A fake Secret Manager on a free loopback port, stopped on exit."""
    fake = FakeSecretManager()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                fake.access,
                request_deserializer=AccessSecretVersionRequest.deserialize,
                response_serializer=AccessSecretVersionResponse.serialize,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    fake.endpoint = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield fake
    finally:
        server.stop(grace=None)


@dataclass
class Keys:
    """An IAM user's access key."""

    access_key_id: str
    secret_access_key: str


@dataclass
class MotoSecrets:
    """moto's Secrets Manager with IAM enforced.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        reader: keys of a user allowed ``secretsmanager:GetSecretValue`` on every secret.
        outsider: keys of a user with no policy: moto answers AccessDeniedException.
        admin: keys of a user allowed everything (creates the secrets).
    """

    endpoint: str
    reader: Keys
    outsider: Keys
    admin: Keys

    def client(self, keys: Keys, service: str = "secretsmanager"):
        """A boto3 client for this server, signed with ``keys``."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=AWS_REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def put(self, name: str, value: str | bytes) -> str:
        """Create the secret ``name`` (text, or binary for bytes); its ARN."""
        kind = "SecretBinary" if isinstance(value, bytes) else "SecretString"
        return self.client(self.admin).create_secret(Name=name, **{kind: value})["ARN"]

    def env(self, keys: Keys) -> dict[str, str]:
        """The environment in which boto3 reaches this server as ``keys``."""
        return {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.endpoint,
            "AWS_REGION": AWS_REGION,
            "AWS_ACCESS_KEY_ID": keys.access_key_id,
            "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
        }


def _user(iam, name: str, policy: dict | None) -> Keys:
    """Create the IAM user ``name`` with an inline ``policy``; its new access key."""
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def _allow(action: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
    }


def _moto_api(endpoint: str, path: str, body: bytes) -> None:
    """POST ``body`` to moto's own API (as text: a form body would be parsed away)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextmanager
def aws_server() -> Iterator[MotoSecrets]:
    """moto on a free loopback port, IAM enforced from the first request after setup.

    moto runs in this process: its IAM switch (``INITIAL_NO_AUTH_ACTION_COUNT``, set through
    ``/moto-api/reset-auth``) and its data are reset on exit, so no other test sees them.
    """
    werkzeug = logging.getLogger("werkzeug")  # one line per request on stderr otherwise
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=AWS_REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        moto = MotoSecrets(
            endpoint=endpoint,
            admin=_user(iam, "bq2pg-admin", _allow("*")),
            reader=_user(iam, "bq2pg-reader", _allow("secretsmanager:GetSecretValue")),
            outsider=_user(iam, "bq2pg-outsider", None),
        )
        _moto_api(endpoint, "reset-auth", b"0")  # every request from now on is authorised
        yield moto
    finally:
        _moto_api(endpoint, "reset-auth", b"inf")
        _moto_api(endpoint, "reset", b"")
        server.stop()
        werkzeug.setLevel(level)
