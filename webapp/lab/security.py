"""Defences of the site that are not about one page: a Content-Security-Policy with a per-request nonce, and a
log-in view that slows down password guessing.

The policy allows the site's own files and the inline `<style>`/`<script>` blocks that carry the request's nonce
(`{{ request.csp_nonce }}`), nothing else: no inline event handlers, no other origins, no framing.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        nonce = f"'nonce-{request.csp_nonce}'"
        response.setdefault("Content-Security-Policy", "; ".join([
            "default-src 'self'", f"script-src 'self' {nonce}", f"style-src 'self' {nonce}",
            "img-src 'self' data:", "object-src 'none'", "base-uri 'self'", "form-action 'self'",
            "frame-ancestors 'none'"]))
        return response


class ThrottledLoginView(auth_views.LoginView):
    """Django's log-in, refused with 429 for LAB_LOGIN_LOCKOUT_SECONDS once a user name or a client address has
    failed LAB_LOGIN_FAILURES times within that window. Counts live in Django's cache (shared by every web process
    when CACHE_URL names a Redis server)."""

    def post(self, request, *args, **kwargs):
        keys = _failure_keys(request)
        if any((cache.get(key) or 0) >= settings.LAB_LOGIN_FAILURES for key in keys):
            form = self.form_class(request)  # unbound: the password is not even checked
            form.cleaned_data = {}
            minutes = max(1, settings.LAB_LOGIN_LOCKOUT_SECONDS // 60)
            form.add_error(None, f"too many failed log-ins; try again in {minutes} minutes")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:  # the form came back: a failed attempt
            for key in keys:
                cache.add(key, 0, settings.LAB_LOGIN_LOCKOUT_SECONDS)
                cache.incr(key)
        return response


def _failure_keys(request: HttpRequest) -> list[str]:
    username = str(request.POST.get("username", ""))[:150].lower()
    address = _client_address(request)
    return [f"lab:login-failures:{kind}:{hashlib.sha256(value.encode('utf-8', 'replace')).hexdigest()}"
            for kind, value in (("user", username), ("address", address))]


def _client_address(request: HttpRequest) -> str:
    """The client's address. Behind the TLS proxy (SECURE_PROXY_SSL_HEADER set) every request comes from the proxy,
    so the address is the last X-Forwarded-For entry, the one the proxy itself appended (earlier ones are the
    client's to forge); else the connection's own."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")
