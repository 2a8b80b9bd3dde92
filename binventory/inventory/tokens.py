"""Bearer tokens for the inventory API's writes. Only a token's SHA-256 is stored: the plain token
is shown once, when it is created."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.models import ApiToken, utcnow

PREFIX = "bvt_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str) -> str:
    """A new token for ``name`` (a person or a robot fleet); returns the plain token."""
    if not name.strip():
        raise BinventoryError("a token needs a name (who or what uses it)")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name.strip(), token_sha256=_digest(token), created_at=utcnow()))
    session.flush()
    return token


def check_token(session: Session, token: str | None) -> ApiToken | None:
    """The live token record for ``token``, or None (unknown, revoked or missing)."""
    if not token:
        return None
    found = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == _digest(token)))
    return found if found is not None and found.revoked_at is None else None


def revoke_tokens(session: Session, name: str) -> int:
    """Revoke every live token of ``name``; returns how many."""
    result = session.execute(update(ApiToken)
                             .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return result.rowcount


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
