"""The web dashboard (``/ui``): server-rendered pages (Jinja2 + htmx, assets vendored)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/ui", include_in_schema=False)
