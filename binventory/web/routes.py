"""The dashboard's pages: overview, bins, a bin, the model, sign-in (the audit queue and the ledger
are binventory.web.queue's).

Writes (claiming and resolving tasks) need the same token as the API: the login form checks it and
keeps it in the ``binventory_token`` cookie (HttpOnly, SameSite=Strict, so other sites can neither
read it nor post forms with it), which the API accepts too. Reads are open like the API's unless
``reads_need_token``: then every page but the sign-in page sends a signed-out browser there
(binventory.web.pages.signed_in)."""
from __future__ import annotations

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from binventory.data.provenance import describe_training_data, training_data_warning
from binventory.inventory import audit, drift, models_api
from binventory.inventory.api import InventoryService
from binventory.inventory.models import DECISIONS
from binventory.inventory.tokens import check_token
from binventory.inventory.views import (bin_history, bin_page, find_model, model_versions, overview,
                                        records_by_day)
from binventory.web import model_registry, queue, runs
from binventory.web.charts import line_chart, percent, records_chart
from binventory.web.pages import (BIN_PAGE_SIZE, COOKIE, COOKIE_MAX_AGE, PAGE_SIZE, STATIC_DIR,  # noqa: F401
                                  Inventory, SignInRequired, _page, bars, pager, protected, render,
                                  sign_in_redirect)


def install(app: FastAPI, *, policy_mismatch: str | None = None) -> None:
    """Serve the pages on ``app``, which serves the inventory API (binventory.inventory.api.install);
    ``policy_mismatch`` says why the served policy does not fit the served model (``serve
    --allow-policy-mismatch``), shown on every page."""
    app.state.policy_mismatch = policy_mismatch
    # The overview's drift watch, of whichever policy is serving; /metrics carries it too.
    app.state.drift = drift.register_metrics(app.state.counting.metrics.registry, app.state.inventory.db,
                                             lambda: app.state.inventory.policy).watch
    app.include_router(router)
    app.include_router(queue.router)
    app.include_router(model_registry.router)
    app.include_router(models_api.router)  # the registry's API, beside the page that uses it
    app.include_router(public)
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


router = protected()
public = APIRouter(include_in_schema=False)  # the sign-in page itself


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
                  headline=runs.headline(model and model["metrics"]), drift=request.app.state.drift.report())


BIN_FILTERS = {"seen": {"yes": True, "no": False}, "task": {"yes": True, "no": False},
               "decision": {d: d for d in DECISIONS}}


@router.get("/bins", response_class=HTMLResponse)
def bins_page(request: Request, inv: Inventory, q: str = "", page: str = "1"):
    """Bins by code prefix; ``seen`` (photographed), ``task`` (an active audit task) and
    ``decision`` (of the last photo) narrow them, so the few observed bins are not buried."""
    n = _page(page)
    chosen = {k: request.query_params.get(k, "") for k in BIN_FILTERS}
    chosen = {k: v if v in BIN_FILTERS[k] else "" for k, v in chosen.items()}
    with inv.db.reader() as session:
        found = bin_page(session, q.strip() or None, BIN_PAGE_SIZE, (n - 1) * BIN_PAGE_SIZE,
                         observed=BIN_FILTERS["seen"].get(chosen["seen"]),
                         open_task=BIN_FILTERS["task"].get(chosen["task"]),
                         decision=BIN_FILTERS["decision"].get(chosen["decision"]))
    return render(request, "bins.html", page="bins", q=q.strip(), bins=found["bins"], chosen=chosen,
                  decisions=DECISIONS, pager=pager(request, found["total"], n, BIN_PAGE_SIZE))


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
def model_page(request: Request, inv: Inventory, version: str = "", promoted: str = "",
               rolled_back: str = ""):
    with inv.db.reader() as session:
        model = find_model(session, version or None)
        versions = model_versions(session)
        registry = model_registry.context(request, session)
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
                  policy=inv.policy.to_dict(), policy_mismatch=model is not None and inv.policy.mismatch(model.version),
                  registry=registry,
                  registry_notice=model_registry.notice(request, registry["active"], promoted, rolled_back))


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
