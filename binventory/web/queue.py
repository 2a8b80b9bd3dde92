"""The audit queue and the ledger pages. Floor staff claim a task (or assign it), recount the bin
and resolve it with a reason; a task someone else has claimed needs an explicit take-over. Only a
signed-in user sees the forms; errors are said in plain words on the task itself."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from binventory import BinventoryError
from binventory.inventory import audit
from binventory.inventory.api import InventoryService
from binventory.inventory.models import ACTIVE_STATUSES, AGREED_REASON, REASON_CODES, AuditTask
from binventory.inventory.views import ledger_page, queue
from binventory.web import pages
from binventory.web.pages import Inventory, User, _page, bars, pager, protected, render

router = protected()
# "to do" (the default): open or claimed, so a task stays in view once someone claims it.
STATUS_FILTERS = ("active", "open", "in_progress", "resolved", "cancelled", "all")
CSV_CHUNK = 1000


@dataclass
class Filters:
    """The queue's filters, from a query string; anything unknown falls back to 'any'."""
    status: str = "active"
    kind: str = ""          # flag or review
    code: str = ""          # the reason code a resolution gave
    min_priority: str = ""
    bin: str = ""           # a bin code prefix
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        def pick(name: str, allowed, default: str = "") -> str:
            value = (params.get(name) or "").strip()
            return value if value in allowed else default

        return cls(status=pick("status", STATUS_FILTERS, "active"), kind=pick("kind", audit.TASK_REASONS),
                   code=pick("code", (AGREED_REASON, *REASON_CODES)),
                   min_priority=(params.get("min_priority") or "").strip(),
                   bin=(params.get("bin") or "").strip(), page=_page(params.get("page")))

    def priority(self) -> float | None:
        try:
            return float(self.min_priority) if self.min_priority else None
        except ValueError:
            return None

    def query(self) -> dict:
        """What views.queue filters on."""
        status = {"all": None, "active": ACTIVE_STATUSES}.get(self.status, self.status)
        return {"status": status, "reason": self.kind or None,
                "reason_code": self.code or None, "min_priority": self.priority(), "bin_prefix": self.bin or None}

    def query_string(self, page: bool = True) -> str:
        values = {"status": self.status, "kind": self.kind, "code": self.code,
                  "min_priority": self.min_priority, "bin": self.bin, "page": self.page if page else ""}
        return urlencode({k: v for k, v in values.items() if v and (k, v) not in (("status", "active"), ("page", 1))})

    def url(self) -> str:
        q = self.query_string()
        return "/audit" + (f"?{q}" if q else "")

    def any(self) -> bool:
        return bool(self.kind or self.code or self.min_priority or self.bin or self.status != "active")


def audit_view(request: Request, inv: InventoryService, filters: Filters, *, error: str | None = None,
               error_task: int | None = None, form: dict | None = None, http_status: int = 200):
    notice = None
    if filters.min_priority and filters.priority() is None:
        notice = f"“{filters.min_priority}” is not a priority: give a number such as 0.5. Showing every priority."
    with inv.db.reader() as session:
        found = queue(session, limit=pages.PAGE_SIZE, offset=(filters.page - 1) * pages.PAGE_SIZE,
                      **filters.query())
    for t in found["tasks"]:
        t["bars"] = bars(t["probabilities"], t["predicted_count"], t["expected_quantity"])
        t["active"] = t["status"] in ("open", "in_progress")
    return render(request, "audit.html", http_status, page="audit", tasks=found["tasks"], f=filters,
                  back=filters.url(), first=replace(filters, page=1).url(), statuses=STATUS_FILTERS, kinds=audit.TASK_REASONS,
                  pager=pager(request, found["total"], filters.page, pages.PAGE_SIZE), notice=notice,
                  error=error, error_task=error_task, form=form or {}, reason_codes=REASON_CODES,
                  agreed=AGREED_REASON)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, inv: Inventory):
    return audit_view(request, inv, Filters.parse(request.query_params))


def _back(back: str) -> Filters:
    """The queue's filters from the page a form was posted on (its path and query)."""
    return Filters.parse(dict(parse_qsl(back.partition("?")[2])))


def _sign_in_first(request: Request, filters: Filters, what: str) -> HTMLResponse:
    return render(request, "login.html", 401, page="login", next=filters.url(),
                  error=f"Sign in with an API token to {what} audit tasks.")


def explain(inv: InventoryService, task_id: int, e: BinventoryError, retry: str) -> tuple[str, int]:
    """What went wrong, for the person at the bin, and the HTTP status; ``retry`` says how to
    take over a task someone else holds."""
    if isinstance(e, audit.NotFound):
        return f"Task {task_id} does not exist (any more). Reload the queue.", 404
    if isinstance(e, audit.Conflict):
        with inv.db.reader() as session:
            task = session.get(AuditTask, task_id)
        if task is not None and task.status in ("resolved", "cancelled"):
            by = f" by {task.resolved_by}" if task.resolved_by else ""
            return f"Task {task_id} is already {task.status}{by}: nothing to do.", 409
        if task is not None and task.assignee:
            return f"{task.assignee} has claimed task {task_id}. {retry.format(name=task.assignee)}", 409
    return str(e)[:1].upper() + str(e)[1:] + ".", 422 if isinstance(e, audit.Invalid) else 409


@router.post("/audit/{task_id}/claim", response_class=HTMLResponse)
def claim_form(request: Request, task_id: int, inv: Inventory, actor: User, assignee: str = Form(""),
               take_over: str = Form(""), back: str = Form("")):
    filters = _back(back)
    if actor is None:
        return _sign_in_first(request, filters, "claim")
    try:
        with inv.db.session() as session:
            audit.claim(session, task_id, assignee.strip() or actor, take_over=bool(take_over))
    except (audit.NotFound, audit.Conflict, audit.Invalid) as e:
        message, http = explain(inv, task_id, e, "Press “Take over” to claim it anyway.")
        return audit_view(request, inv, filters, error=message, error_task=task_id, http_status=http)
    return RedirectResponse(f"{filters.url()}#task-{task_id}", 303)


def _counted(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def _precheck(session, task_id: int, counted: int, reason_code: str) -> str | None:
    """What the form cannot book, in the counter's words (audit.resolve would refuse it too)."""
    task = audit.get_task(session, task_id)
    expected = audit.expected_quantity(session, task.bin_id)
    if reason_code == AGREED_REASON and counted != expected:
        return f"You counted {counted} but the record says {expected}: pick the reason they differ."
    if counted != expected and not task.bin.contents:
        return (f"The record lists no products in this bin, so this form cannot book {counted} items: "
                f"record per-product counts through the API (sku_counts).")
    return None


@router.post("/audit/{task_id}/resolve", response_class=HTMLResponse)
def resolve_form(request: Request, task_id: int, inv: Inventory, actor: User, counted_quantity: str = Form(""),
                 reason_code: str = Form(""), note: str = Form(""), take_over: str = Form(""),
                 back: str = Form("")):
    filters = _back(back)
    if actor is None:
        return _sign_in_first(request, filters, "resolve")
    form = {"counted_quantity": counted_quantity, "reason_code": reason_code, "note": note}

    def failed(message: str, http: int = 422) -> HTMLResponse:
        return audit_view(request, inv, filters, error=message, error_task=task_id, form=form, http_status=http)

    counted = _counted(counted_quantity)
    if counted is None:
        return failed(f"The counted quantity must be a whole number, 0 or more "
                      f"(got {counted_quantity.strip() or 'nothing'!r}).")
    if reason_code not in (AGREED_REASON, *REASON_CODES):
        return failed("Pick a reason: “count agrees with the record”, or why the count differs.")
    try:
        with inv.db.session() as session:
            problem = _precheck(session, task_id, counted, reason_code)
            if problem is None:
                task, _ = audit.resolve(session, task_id, counted_quantity=counted, actor=actor,
                                        reason_code=reason_code, note=note.strip() or None,
                                        take_over=bool(take_over))
                code = task.bin.code
    except (audit.NotFound, audit.Conflict, audit.Invalid) as e:
        return failed(*explain(inv, task_id, e, "Tick “take over from {name}” to resolve it yourself."))
    if problem is not None:
        return failed(problem)
    return RedirectResponse(f"/bins/{quote(code, safe='')}?resolved={task_id}", 303)


@router.get("/ledger", response_class=HTMLResponse)
def ledger_view(request: Request, inv: Inventory, bin: str = "", page: str = "1"):
    n, prefix = _page(page), bin.strip()
    with inv.db.reader() as session:
        found = ledger_page(session, prefix or None, pages.BIN_PAGE_SIZE, (n - 1) * pages.BIN_PAGE_SIZE)
    return render(request, "ledger.html", page="ledger", bin=prefix, ledger=found["ledger"],
                  pager=pager(request, found["total"], n, pages.BIN_PAGE_SIZE))


CSV_COLUMNS = ("id", "created_at", "bin", "sku", "delta", "quantity_before", "quantity_after",
               "reason_code", "task_id", "actor")


def _cell(value) -> str:
    # A spreadsheet runs a text cell that starts like a formula: keep names and codes text.
    text = "" if value is None else str(value)
    return "'" + text if not isinstance(value, int) and text[:1] in ("=", "+", "-", "@") else text


def ledger_csv_rows(inv: InventoryService, prefix: str | None) -> Iterator[str]:
    """The whole ledger, newest first, a chunk per short read (no session held while sending)."""
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    yield out.getvalue()
    before = None
    while True:
        with inv.db.reader() as session:
            rows = ledger_page(session, prefix, CSV_CHUNK, before_id=before)["ledger"]
        if not rows:
            return
        out = io.StringIO()
        csv.writer(out).writerows([[_cell(r[c]) for c in CSV_COLUMNS] for r in rows])
        yield out.getvalue()
        before = rows[-1]["id"]


@router.get("/ledger.csv")
def ledger_csv(inv: Inventory, bin: str = ""):
    prefix = bin.strip() or None
    name = f"ledger-{prefix}.csv" if prefix and prefix.isalnum() else "ledger.csv"
    return StreamingResponse(ledger_csv_rows(inv, prefix), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
