"""Rendering the admin and account pages: one template call, and the generic form page (ccany_form.html)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datasette.utils.asgi import Response

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request


async def render(datasette: Datasette, request: Request, template: str, context: dict, status: int = 200,
                 headers: dict | None = None) -> Response:
    html = await datasette.render_template(template, context, request=request, view_name="ccany-admin")
    return Response.html(html, status=status, headers=headers)


def form_field(name: str, label: str, kind: str = "text", autocomplete: str = "off", value: str = "",
               required: bool = True, note: str = "") -> dict:
    return {"name": name, "label": label, "type": kind, "autocomplete": autocomplete, "value": value,
            "required": required, "note": note}


async def form_page(datasette: Datasette, request: Request, *, title: str, intro: str, fields: list[dict],
                    submit: str, error: str | None = None, status: int = 200,
                    hidden: dict | None = None) -> Response:
    return await render(datasette, request, "ccany_form.html", {
        "title": title, "intro": intro, "fields": fields, "submit": submit, "error": error,
        "hidden": hidden or {}, "action": request.path,
    }, status=status)
