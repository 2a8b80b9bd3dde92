"""The model page's registry: every model with its state, lineage, data, metrics and last
comparison in words a manager can act on, and the promote and rollback forms.

Promoting or rolling back takes two steps without any script: the button opens a confirm page
(a GET, which changes nothing) and only its form posts. A candidate the gate refuses
(binventory.inventory.registry.gate) shows why on that page and needs the "force" box ticked.
Only a signed-in user (an API token, as for the audit queue) sees the buttons or may post."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from binventory.inventory import registry
from binventory.inventory.audit import Conflict, NotFound
from binventory.inventory.compare import FIGURES, GAINS, LABELS
from binventory.inventory.models import Model
from binventory.web.pages import Inventory, User, protected, render

log = logging.getLogger(__name__)
router = protected()


def served_version(request: Request) -> str:
    return request.app.state.counting.predictor.model_id


def follow_note(request: Request, active: str) -> str:
    """What happens to the serving after a promotion or rollback, as it really is."""
    follower = getattr(request.app.state, "follower", None)
    if follower is not None:
        return (f"This service follows the registry: it serves model {active} within "
                f"{follower.poll_s:g} s, without a restart.")
    if served_version(request) == active:
        return f"This service already serves model {active}."
    return (f"This service keeps serving model {served_version(request)} until it restarts: restart "
            f"'binventory serve' with this model's artifact, or run it with --follow-registry to "
            f"follow the registry without restarts.")


def key_metrics(metrics: dict | None) -> list[tuple[str, str]]:
    """Validation and test exact accuracy and the count RMSE, where the artifact has them."""
    metrics = metrics if isinstance(metrics, dict) else {}
    val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    # Test metrics are per evaluation protocol: the first one, as the model's headline takes it.
    test = next((b for b in test.values() if isinstance(b, dict) and b.get("n")), test)
    shown = []
    for label, block, key in (("val", val, "accuracy"), ("test", test, "accuracy"),
                              ("RMSE", test if "rmse" in test else val, "rmse")):
        v = block.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            shown.append((label, f"{v:.1%}" if key == "accuracy" else f"{v:.2f}"))
    return shown


def data_entries(data: list | None) -> list[dict]:
    """The manifests a model trained on, named by their folder (audit exports are DIR/manifest)."""
    out = []
    for d in data or []:
        if not isinstance(d, dict):
            continue
        path = Path(str(d.get("manifest") or "?"))
        out.append({"manifest": "/".join(path.parts[-2:]), "images": d.get("images"),
                    "labelled_until": d.get("labelled_until")})
    return out


def _fmt(name: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if name == "rmse":
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{100 * value:+.1f} points" if signed else f"{value:.1%}"


def _interval(name: str, d: dict) -> str:
    if d.get("low") is None:
        return ""
    scale = 1 if name == "rmse" else 100
    return f"[{scale * d['low']:.{3 if name == 'rmse' else 1}f}, {scale * d['high']:.{3 if name == 'rmse' else 1}f}]"


def figure_line(name: str, figure: dict) -> str:
    """One figure, candidate against the model it was compared with, and the difference's 95%
    interval: 'exact accuracy 71.2% vs 68.1%: +3.1 points [0.8, 5.4]'."""
    cand, base, diff = (figure.get(k) or {} for k in ("candidate", "baseline", "difference"))
    if diff.get("value") is None:
        return f"{LABELS[name]}: {figure.get('note') or 'not measurable on these audits'}"
    lower = "" if FIGURES[name] else " (lower is better)"
    return (f"{LABELS[name]} {_fmt(name, cand.get('value'))} vs {_fmt(name, base.get('value'))}: "
            f"{_fmt(name, diff['value'], True)} {_interval(name, diff)}{lower}")


def comparison_words(c: dict | None, active: str | None) -> dict | None:
    """The last comparison as a sentence to act on, and each figure with its interval."""
    if not c:
        return None
    audits, against = c.get("audits") or 0, c.get("against")
    figures = c.get("figures") or {}
    lines = [figure_line(n, figures[n]) for n in FIGURES if isinstance(figures.get(n), dict)]
    coverage = c.get("coverage") or {}
    if lines and coverage.get("share") is not None:  # older comparisons were not weighted
        missing = coverage.get("missing") or []
        lines.append(f"weighted to the photos judged since; they cover {coverage['share']:.0%} of them"
                     + (f" (no audits of {', '.join(missing)})" if missing else ""))
    stale = active is not None and against != active
    if c.get("verdict") == "better":
        gains = [f"{LABELS[n]} by {_fmt(n, figures[n]['difference']['value'], True).lstrip('+')} "
                 f"{_interval(n, figures[n]['difference'])}" for n in GAINS
                 if ((figures.get(n) or {}).get("difference") or {}).get("low") is not None
                 and figures[n]["difference"]["low"] > 0]
        summary = f"better than {against} on {' and '.join(gains) or 'the gate rule'} on {audits:,} audits"
        advice = "safe to promote" if not stale else "compare again before promoting"
    else:
        reasons = "; ".join(c.get("reasons") or ["no reason recorded"])
        summary = (f"not compared with {against}: {reasons}" if c.get("verdict") == "no audits"
                   else f"not better than {against} on {audits:,} audits: {reasons}")
        advice = f"keep {against}; promoting it needs 'force'"
    if stale:
        advice += f" (it was compared with {against}, which is no longer the active model {active})"
    return {"verdict": c.get("verdict"), "better": c.get("verdict") == "better" and not stale,
            "text": f"{summary}: {advice}.", "lines": lines, "audits": audits, "against": against,
            "when": c.get("compared_at"), "since": c.get("since")}


def rows(models: list[Model], served: str) -> list[dict]:
    known = {m.version for m in models}
    current = next((m for m in models if m.state == "active"), None)
    return [{"version": m.version, "name": m.name, "state": m.state, "served": m.version == served,
             "parent": m.parent, "parent_known": m.parent in known, "data": data_entries(m.data),
             "metrics": key_metrics(m.metrics), "registered_at": m.registered_at,
             "state_changed_at": m.state_changed_at,
             "comparison": comparison_words(m.comparison, current.version if current else None),
             "gate": registry.gate(m, current) if m.state != "active" else None}
            for m in models]


def context(request: Request, session) -> dict:
    """What the model page shows of the registry."""
    models = registry.list_models(session)
    current = next((m for m in models if m.state == "active"), None)
    served = served_version(request)
    has_retired = any(m.state == "retired" for m in models)
    return {"models": rows(models, served), "active": current.version if current else None,
            "served": served, "can_rollback": current is not None and has_retired,
            "follows": getattr(request.app.state, "follower", None) is not None}


def _sign_in_first(request: Request, back: str, what: str) -> HTMLResponse:
    return render(request, "login.html", 401, page="login", next=back,
                  error=f"Sign in with an API token to {what}.")


def _confirm(request: Request, inv, action: str, version: str | None, *, error: str | None = None,
             http_status: int = 200) -> HTMLResponse:
    with inv.db.reader() as session:
        current = registry.active(session)
        try:
            model = registry.get(session, version) if version else registry.rollback_target(session)
        except NotFound as e:
            return render(request, "message.html", 404, page="model", title="Unknown model",
                          message=f"{str(e)[:1].upper()}{str(e)[1:]}.")
        if action == "rollback" and (current is None or model is None):
            return render(request, "message.html", 409, page="model", title="Nothing to roll back",
                          message="There is no active model, or none was active before it: "
                                  "there is nothing to roll back to.")
        if action == "promote" and current is not None and current.version == model.version:
            return render(request, "message.html", 409, page="model", title="Already active",
                          message=f"Model {model.version} is already the active model.")
        gate = registry.gate(model, current) if action == "promote" else None
        found = rows([model] + ([current] if current is not None else []), served_version(request))[0]
        return render(request, "model_confirm.html", http_status, page="model", action=action, m=found,
                      current=current.version if current else None, gate=gate, error=error,
                      follow=follow_note(request, model.version))


@router.get("/model/{version}/promote", response_class=HTMLResponse)
def confirm_promote(request: Request, version: str, inv: Inventory, actor: User):
    if actor is None:
        return _sign_in_first(request, request.url.path, "promote a model")
    return _confirm(request, inv, "promote", version)


@router.post("/model/{version}/promote", response_class=HTMLResponse)
def promote_form(request: Request, version: str, inv: Inventory, actor: User, force: str = Form("")):
    if actor is None:
        return _sign_in_first(request, f"/model/{quote(version, safe='')}/promote", "promote a model")
    try:
        with inv.db.session() as session:
            registry.promote(session, version, force=bool(force))
    except NotFound:
        return _confirm(request, inv, "promote", version)  # says the model is unknown, 404
    except Conflict as e:
        return _confirm(request, inv, "promote", version, error=str(e).replace(" (--force", " (tick "
                        "'force'").replace("promotes it anyway)", "to promote it anyway)"), http_status=409)
    log.info("%s promoted model %s%s from the dashboard", actor, version, " (forced)" if force else "")
    return RedirectResponse(f"/model?promoted={quote(version, safe='')}#registry", 303)


@router.get("/model/rollback", response_class=HTMLResponse)
def confirm_rollback(request: Request, inv: Inventory, actor: User):
    if actor is None:
        return _sign_in_first(request, "/model/rollback", "roll back the active model")
    return _confirm(request, inv, "rollback", None)


@router.post("/model/rollback", response_class=HTMLResponse)
def rollback_form(request: Request, inv: Inventory, actor: User):
    if actor is None:
        return _sign_in_first(request, "/model/rollback", "roll back the active model")
    try:
        with inv.db.session() as session:
            version = registry.rollback(session).version
    except Conflict:
        return _confirm(request, inv, "rollback", None)  # says there is nothing to roll back to
    log.info("%s rolled the registry back to model %s from the dashboard", actor, version)
    return RedirectResponse(f"/model?rolled_back={quote(version, safe='')}#registry", 303)


def notice(request: Request, active: str | None, promoted: str, rolled_back: str) -> str | None:
    """The line shown after a promotion or rollback: what is active, and what the service does
    (nothing when the query string names a model that is not the active one)."""
    version = promoted or rolled_back
    if not version or version != active:
        return None
    done = f"Model {version} is now active" + (" again." if rolled_back else ".")
    return f"{done} {follow_note(request, version)}"
