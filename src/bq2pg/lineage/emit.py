"""Send OpenLineage events through ``openlineage-python``'s transports, never failing a run.

Lineage is off unless configured, by bq2pg.yaml's ``lineage:`` section::

    lineage:
      transport: http            # http | file | console
      url: https://marquez.example.com
      endpoint: api/v1/lineage   # the default
      api_key: ${env:OPENLINEAGE_API_KEY}
      timeout: 5                 # seconds per attempt
      retries: 2                 # further attempts on connection errors and 5xx

    lineage: {transport: file, path: /var/log/bq2pg/lineage.jsonl}   # one event per line

or by the client's standard variables: ``OPENLINEAGE_URL`` (with ``OPENLINEAGE_ENDPOINT`` and
``OPENLINEAGE_API_KEY``), ``OPENLINEAGE_CONFIG`` (an ``openlineage.yml``, which the client reads
itself) or ``OPENLINEAGE__TRANSPORT__*``. ``OPENLINEAGE_DISABLED=true`` turns it off.

A backend that is down or refuses an event costs at most ``timeout`` x (``retries`` + 1)
seconds plus short backoffs; :meth:`Emitter.emit` then logs ``lineage.failed`` (without the API
key), counts ``bq2pg_lineage_events_total{status="failed"}`` and returns False.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import RunEvent
from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpConfig,
    HttpTransport,
    TokenProvider,
)
from openlineage.client.transport.transport import Transport

from bq2pg.config.secrets import Secret, redact
from bq2pg.errors import ConfigError
from bq2pg.observe import metrics
from bq2pg.observe.log import get_logger

log = get_logger(__name__)

#: Seconds one attempt to deliver an event may take: a lineage backend is never worth stalling
#: a load for (the client's default is 5 s too).
HTTP_TIMEOUT_S = 5.0
#: Attempts after the first on a connection error or a 5xx (the client's default, 5, with its
#: 0.3 s exponential backoff, can hold a run ~10 s per event when the backend is down).
HTTP_RETRIES = 2
HTTP_BACKOFF_S = 0.3
DEFAULT_ENDPOINT = "api/v1/lineage"
TRANSPORTS = ("http", "file", "console")
SETTINGS = frozenset(
    {"transport", "url", "endpoint", "api_key", "timeout", "retries", "verify", "path"}
)
#: The client's variables that turn lineage on without a ``lineage:`` section.
STANDARD_VARIABLES = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE__TRANSPORT__TYPE")


class Emitter:
    """Sends events through one OpenLineage client; :meth:`emit` never raises."""

    def __init__(self, client: OpenLineageClient, *, secrets: tuple[str, ...] = ()) -> None:
        self.client = client
        #: Values to scrub from error messages before they are logged (the API key).
        self._secrets = tuple(s for s in secrets if s)

    @property
    def transport(self) -> str:
        """The transport's kind: ``http``, ``file``, ``console`` ..."""
        return str(self.client.transport.kind)

    def emit(self, event: RunEvent) -> bool:
        """Send ``event``; False (logged and counted) if the backend did not take it."""
        try:
            self.client.emit(event)
        except Exception as exc:  # whatever a backend does, the run goes on
            log.warning(
                "lineage.failed",
                transport=self.transport,
                event_type=getattr(event.eventType, "value", None),
                error=self._scrub(f"{type(exc).__name__}: {exc}"),
            )
            metrics.LINEAGE_EVENTS.labels("failed").inc()
            return False
        metrics.LINEAGE_EVENTS.labels("sent").inc()
        return True

    def close(self) -> None:
        """Release the transport's connections (pending events are not waited for long)."""
        try:
            self.client.close(timeout=HTTP_TIMEOUT_S)
        except Exception as exc:  # closing must not fail a run either
            log.warning("lineage.close_failed", error=self._scrub(str(exc)))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)


def from_settings(
    settings: Mapping[str, Any] | None, environ: Mapping[str, str] = os.environ
) -> Emitter | None:
    """The emitter bq2pg.yaml's ``lineage:`` section (or the client's variables) asks for, or
    None when lineage is off (the default).

    Raises:
        ConfigError: an unknown transport or setting, or one missing (``url``, ``path``).
    """
    if environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return None
    given = {k: v for k, v in (settings or {}).items() if v is not None}  # unset keys: None
    if given:
        transport, secret = _transport(given)
        return Emitter(OpenLineageClient(transport=transport), secrets=(secret,))
    if environ.get("OPENLINEAGE_URL"):
        api_key = environ.get("OPENLINEAGE_API_KEY", "")
        transport = _http(
            url=environ["OPENLINEAGE_URL"],
            endpoint=environ.get("OPENLINEAGE_ENDPOINT") or DEFAULT_ENDPOINT,
            api_key=api_key,
        )
        return Emitter(OpenLineageClient(transport=transport), secrets=(api_key,))
    if any(environ.get(name) for name in STANDARD_VARIABLES):
        return Emitter(OpenLineageClient())  # the client reads its file and variables itself
    return None


def _transport(settings: Mapping[str, Any]) -> tuple[Transport, str]:
    """The transport of a ``lineage:`` section and the secret it holds (to scrub from logs)."""
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise ConfigError(
            f"lineage: unknown setting(s) {', '.join(unknown)}; "
            f"the settings are {', '.join(sorted(SETTINGS))}"
        )
    kind = str(settings.get("transport") or ("http" if settings.get("url") else ""))
    if kind not in TRANSPORTS:
        raise ConfigError(
            f"lineage: transport {kind or None!r} is not one of {', '.join(TRANSPORTS)}"
        )
    if kind == "console":
        return ConsoleTransport(ConsoleConfig()), ""
    if kind == "file":
        path = settings.get("path")
        if not path:
            raise ConfigError(
                "lineage: the file transport needs path: (events go there, one a line)"
            )
        return FileTransport(FileConfig(log_file_path=str(path), append=True)), ""
    url = settings.get("url")
    if not url:
        raise ConfigError("lineage: the http transport needs url: (e.g. http://marquez:5000)")
    api_key = settings.get("api_key")
    key = api_key.reveal() if isinstance(api_key, Secret) else str(api_key or "")
    transport = _http(
        url=str(url),
        endpoint=str(settings.get("endpoint") or DEFAULT_ENDPOINT),
        api_key=key,
        timeout=float(settings.get("timeout") or HTTP_TIMEOUT_S),
        retries=int(settings.get("retries", HTTP_RETRIES)),
        verify=settings.get("verify", True) is not False,
    )
    return transport, key


def _http(
    *,
    url: str,
    endpoint: str,
    api_key: str,
    timeout: float = HTTP_TIMEOUT_S,
    retries: int = HTTP_RETRIES,
    verify: bool = True,
) -> HttpTransport:
    auth = ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({})
    retry = {
        "total": retries,
        "connect": retries,
        "read": retries,
        "backoff_factor": HTTP_BACKOFF_S,
        "status_forcelist": [500, 502, 503, 504],
        "allowed_methods": ["HEAD", "POST"],
        # a 5xx after the last attempt is reported by raise_for_status, not as a retry error
        "raise_on_status": False,
    }
    try:
        config = HttpConfig(
            url=url, endpoint=endpoint, timeout=timeout, verify=verify, auth=auth, retry=retry
        )
        return HttpTransport(config)
    except ValueError:
        raise ConfigError(
            f"lineage: url {redact(url)!r} is not a URL with a scheme and a host "
            "(e.g. http://marquez:5000)"
        ) from None
