"""What every dashboard page shares: the templates and their filters, paging, the signed-in user
and the sign-in rule (``signed_in``: with ``reads_need_token``, a signed-out browser goes to the
sign-in page, ``SignInRequired``, which the app answers with ``sign_in_redirect``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from binventory.inventory.api import TOKEN_COOKIE, InventoryService, inventory, token_user
from binventory.model.classes import CountClasses

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
COOKIE = TOKEN_COOKIE
COOKIE_MAX_AGE = 12 * 3600
PAGE_SIZE = 20        # audit tasks, observations
BIN_PAGE_SIZE = 50    # bins, ledger rows


def _page(value: str | None) -> int:
    """A page number from the query string: 1 for anything that is not a positive integer."""
    value = (value or "").strip()
    return max(1, int(value)) if value.isdigit() else 1


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None and hasattr(value, "strftime") \
        else (str(value)[:16].replace("T", " ") if value else "")


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["pct"] = lambda v: "" if v is None else f"{v:.1%}"
TEMPLATES.env.filters["num"] = lambda v: "" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.3g}")


def pager(request: Request, total: int, page: int, size: int, param: str = "page") -> dict:
    pages = max(1, math.ceil(total / size))

    def url(n: int) -> str:
        return "?" + request.url.include_query_params(**{param: n}).query

    return {"page": page, "pages": pages, "total": total, "first": (page - 1) * size + 1 if total else 0,
            "last": min(page * size, total), "prev": url(page - 1) if page > 1 else None, "first_url": url(1),
            "next": url(page + 1) if page < pages else None}


def bars(probabilities: dict | None, predicted: int | None, expected: int | None) -> list[dict]:
    """The predicted count distribution as bars; marks the predicted and the expected class."""
    if not probabilities:
        return []
    names = list(probabilities)
    try:
        classes = CountClasses.from_names(names)
    except ValueError:  # not count classes: show the bars, mark nothing
        classes = None

    def class_of(count):
        k = classes.index_of(count) if classes is not None and count is not None else -1
        return names[k] if k >= 0 else None

    want, got = class_of(expected), class_of(predicted)
    return [{"name": n, "p": float(p), "height": max(1.0, 100 * float(p)), "expected": n == want,
             "predicted": n == got} for n, p in probabilities.items()]


class SignInRequired(Exception):
    """A signed-out browser asked for a page while reads need a token."""

    def __init__(self, next_url: str):
        super().__init__(next_url)
        self.next_url = next_url


async def sign_in_redirect(request: Request, e: SignInRequired) -> RedirectResponse:
    """The app's handler for SignInRequired: to the sign-in page, which comes back afterwards."""
    return RedirectResponse(f"/login?next={quote(e.next_url, safe='')}", 303)


Inventory = Annotated[InventoryService, Depends(inventory)]


def user(request: Request, inv: Inventory) -> str | None:
    """Who is signed in (the sign-in cookie or a bearer header), or None."""
    return token_user(inv.db, request)


User = Annotated[str | None, Depends(user)]


def signed_in(request: Request, inv: Inventory, name: User) -> None:
    if inv.reads_need_token and name is None:
        # A form post cannot be replayed after signing in: come back to the queue instead.
        url = request.url
        raise SignInRequired(url.path + (f"?{url.query}" if url.query else "")
                             if request.method == "GET" else "/audit")


def protected() -> APIRouter:
    """A router for pages that follow the sign-in rule."""
    return APIRouter(include_in_schema=False, dependencies=[Depends(signed_in)])


def render(request: Request, template: str, http_status: int = 200, **context) -> HTMLResponse:
    state = request.app.state
    return TEMPLATES.TemplateResponse(request, template, {
        "user": token_user(state.inventory.db, request), "reads_need_token": state.inventory.reads_need_token,
        "served_policy_mismatch": state.policy_mismatch, **context}, status_code=http_status)
