"""The dashboard's pages: overview, audit queue (with the resolve form), bins, a bin, the model.

Writes (resolving a task) need the same token as the API: the login form checks it and keeps it in
the ``binventory_token`` cookie (HttpOnly, SameSite=Strict, so other sites can neither read it nor
post forms with it), which the API accepts too. Reads are open like the API's unless
``reads_need_token``: then every page but the sign-in page sends a signed-out browser there
(``SignInRequired``, which the app answers with ``sign_in_redirect``)."""
from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import quote

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from binventory.data.provenance import describe_training_data, training_data_warning
from binventory.inventory import audit
from binventory.inventory.api import TOKEN_COOKIE, InventoryService, inventory, token_user
from binventory.inventory.models import AGREED_REASON, REASON_CODES
from binventory.inventory.tokens import check_token
from binventory.inventory.views import (bin_history, bin_page, find_model, model_versions, overview, queue,
                                        records_by_day)
from binventory.model.classes import CountClasses
from binventory.web import runs
from binventory.web.charts import line_chart, percent, records_chart

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
COOKIE = TOKEN_COOKIE
COOKIE_MAX_AGE = 12 * 3600
PAGE_SIZE = 20        # audit tasks, observations
BIN_PAGE_SIZE = 50    # bins, ledger rows
STATUS_FILTERS = ("open", "in_progress", "resolved", "cancelled", "all")


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
            "last": min(page * size, total), "prev": url(page - 1) if page > 1 else None,
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


def install(app: FastAPI, *, policy_mismatch: str | None = None) -> None:
    """Serve the pages on ``app``, which serves the inventory API (binventory.inventory.api.install);
    ``policy_mismatch`` says why the served policy does not fit the served model (``serve
    --allow-policy-mismatch``), shown on every page."""
    app.state.policy_mismatch = policy_mismatch
    app.include_router(router)
    app.include_router(public)
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


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


router = APIRouter(include_in_schema=False, dependencies=[Depends(signed_in)])
public = APIRouter(include_in_schema=False)  # the sign-in page itself


def render(request: Request, template: str, http_status: int = 200, **context) -> HTMLResponse:
    state = request.app.state
    return TEMPLATES.TemplateResponse(request, template, {
        "user": token_user(state.inventory.db, request), "reads_need_token": state.inventory.reads_need_token,
        "served_policy_mismatch": state.policy_mismatch, **context}, status_code=http_status)


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, inv: Inventory):
    with inv.db.reader() as session:
        numbers = overview(session)
        days = records_by_day(session, 60)
    model = numbers["model"]
    # What the thresholds that confirmed these bins let through, as calibration measured it.
    false_confirm = (((model or {}).get("policy") or {}).get("stats") or {}).get("false_confirm") or {}
    return render(request, "overview.html", page="overview", n=numbers, days=days, recent=days[::-1][:7],
                  chart=records_chart(days), false_confirm=false_confirm, model=model,
                  headline=runs.headline(model and model["metrics"]))


def audit_view(request: Request, inv: InventoryService, status: str, bin_code: str, page: int, *,
               error: str | None = None, error_task: int | None = None, form: dict | None = None,
               http_status: int = 200):
    status = status if status in STATUS_FILTERS else "open"
    bin_code = bin_code.strip()
    rows, total, notice = [], 0, None
    with inv.db.reader() as session:
        try:
            found = queue(session, status=None if status == "all" else status, bin_code=bin_code or None,
                          limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
            rows, total = found["tasks"], found["total"]
        except audit.NotFound as e:
            notice = str(e)
    for t in rows:
        t["bars"] = bars(t["probabilities"], t["predicted_count"], t["expected_quantity"])
        t["active"] = t["status"] in ("open", "in_progress")
    return render(request, "audit.html", http_status, page="audit", tasks=rows, status=status,
                  bin=bin_code, statuses=STATUS_FILTERS, pager=pager(request, total, page, PAGE_SIZE),
                  notice=notice, error=error, error_task=error_task, form=form or {},
                  reason_codes=REASON_CODES, agreed=AGREED_REASON)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, inv: Inventory, status: str = "open", bin: str = "", page: str = "1"):
    return audit_view(request, inv, status, bin, _page(page))


@router.post("/audit/{task_id}/resolve", response_class=HTMLResponse)
def resolve_form(request: Request, task_id: int, inv: Inventory, actor: User, counted_quantity: str = Form(""),
                 reason_code: str = Form(""), note: str = Form(""), status: str = Form("open"),
                 bin: str = Form(""), page: str = Form("1")):
    if actor is None:
        return render(request, "login.html", 401, page="login", next=f"/audit?status={quote(status)}",
                      error="Sign in with an API token to resolve audit tasks.")
    form = {"counted_quantity": counted_quantity, "reason_code": reason_code, "note": note}
    try:
        counted = int(counted_quantity.strip())
        if counted < 0:
            raise ValueError
    except ValueError:
        return audit_view(request, inv, status, bin, _page(page), http_status=422, error_task=task_id, form=form,
                          error=f"The counted quantity must be a whole number, 0 or more "
                                f"(got {counted_quantity.strip() or 'nothing'!r}).")
    try:
        with inv.db.session() as session:
            task, _ = audit.resolve(session, task_id, counted_quantity=counted, actor=actor,
                                    reason_code=reason_code or None, note=note.strip() or None)
            code = task.bin.code
    except (audit.NotFound, audit.Conflict, audit.Invalid) as e:
        http = 404 if isinstance(e, audit.NotFound) else 409 if isinstance(e, audit.Conflict) else 422
        return audit_view(request, inv, status, bin, _page(page), error=str(e), error_task=task_id, form=form,
                          http_status=http)
    return RedirectResponse(f"/bins/{quote(code, safe='')}?resolved={task_id}", 303)


@router.get("/bins", response_class=HTMLResponse)
def bins_page(request: Request, inv: Inventory, q: str = "", page: str = "1"):
    n = _page(page)
    with inv.db.reader() as session:
        found = bin_page(session, q.strip() or None, BIN_PAGE_SIZE, (n - 1) * BIN_PAGE_SIZE)
    return render(request, "bins.html", page="bins", q=q.strip(), bins=found["bins"],
                  pager=pager(request, found["total"], n, BIN_PAGE_SIZE))


@router.get("/bins/{code}", response_class=HTMLResponse)
def bin_view(request: Request, code: str, inv: Inventory, obs: str = "1", ledger: str = "1", resolved: str = ""):
    obs_n, ledger_n = _page(obs), _page(ledger)
    with inv.db.reader() as session:
        try:
            found = bin_history(session, code, observations=(PAGE_SIZE, (obs_n - 1) * PAGE_SIZE),
                                ledger=(BIN_PAGE_SIZE, (ledger_n - 1) * BIN_PAGE_SIZE))
        except audit.NotFound as e:
            return render(request, "message.html", 404, page="bins", title="Unknown bin", message=str(e))
    for o in found["observations"]:
        o["bars"] = bars(o["probabilities"], o["predicted_count"], o["expected_quantity"])
    return render(request, "bin.html", page="bins", b=found["bin"], observations=found["observations"],
                  ledger=found["ledger"], tasks=found["tasks"],
                  resolved=int(resolved) if resolved.isdigit() else None,
                  obs_pager=pager(request, found["n_observations"], obs_n, PAGE_SIZE, "obs"),
                  ledger_pager=pager(request, found["n_ledger"], ledger_n, BIN_PAGE_SIZE, "ledger"))


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, inv: Inventory, version: str = ""):
    with inv.db.reader() as session:
        model = find_model(session, version or None)
        versions = model_versions(session)
    if model is None and version:
        return render(request, "message.html", 404, page="model", title="Unknown model",
                      message=f"No model with version {version!r} has judged this inventory.")
    run = runs.load(model.path) if model else None
    charts = []
    if run and run.get("curves"):
        for title, keys in (("Loss", ["train_loss", "val_nll"]),
                            ("Accuracy", ["train_accuracy", "val_accuracy", "val_within1"]),
                            ("Count error", ["val_mae", "val_rmse"])):
            s = runs.series(run["curves"], keys)
            if s:
                share = {"y_range": (0, 1), "y_format": percent} if title == "Accuracy" else {}
                charts.append(line_chart(s, title=title, x_label="epoch", **share))
    trained_on = (model.metrics or {}).get("training_data") if model else None
    return render(request, "model.html", page="model", model=model, versions=versions, run=run,
                  charts=charts, headline=runs.headline(model.metrics if model else None),
                  trained_on=describe_training_data(trained_on),
                  trained_on_warning=training_data_warning(trained_on),
                  policy=inv.policy.to_dict(), policy_mismatch=model is not None and inv.policy.mismatch(model.version))


def model_path(inv: InventoryService, version: str) -> str | None:
    with inv.db.reader() as session:
        model = find_model(session, version)
    return model.path if model else None


@router.get("/model/{version}/eval/{folder}/{name}")
def eval_image(version: str, folder: str, name: str, inv: Inventory):
    path = runs.eval_image(model_path(inv, version), folder, name)
    if path is None:
        return Response("not found", 404, media_type="text/plain")
    return FileResponse(path, media_type="image/png")


@router.get("/model/{version}/report.html")
def diagnostics_report(version: str, inv: Inventory):
    path = runs.report(model_path(inv, version))
    if path is None:
        return Response("no diagnostics report for this model", 404, media_type="text/plain")
    # Written by binventory, but shown sandboxed all the same: no scripts, only inline images.
    return FileResponse(path, media_type="text/html", headers={
        "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"})


@public.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", page="login", next=next)


@public.post("/login", response_class=HTMLResponse)
def login(request: Request, inv: Inventory, token: str = Form(""), next: str = Form("/")):
    with inv.db.reader() as session:
        found = check_token(session, token.strip())
    if found is None:
        return render(request, "login.html", 401, page="login", next=next,
                      error="That token is unknown or revoked. Create one with "
                            "'binventory inventory token create NAME'.")
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, 303)
    response.set_cookie(COOKIE, token.strip(), max_age=COOKIE_MAX_AGE, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@public.post("/logout")
def logout():
    response = RedirectResponse("/", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
