"""The dashboard: HTML pages on the service's FastAPI app at ``/`` (binventory.app). It reads and
writes the inventory through binventory.inventory; the inventory never imports it."""
from binventory.web.routes import STATIC_DIR, SignInRequired, install, sign_in_redirect

__all__ = ["STATIC_DIR", "SignInRequired", "install", "sign_in_redirect"]
