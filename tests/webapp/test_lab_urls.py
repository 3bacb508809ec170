"""Every URL of the site refuses anonymous users (redirect to login, or 401 for the API) except login and /healthz.

The walk covers the whole URLconf, so a new view that forgets authentication fails here.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from lab_helpers import submit_pretrain

pytestmark = pytest.mark.django_db

PUBLIC = {"/healthz", "/login/", "/admin/login/", "/favicon.svg", "/favicon.ico"}  # log-ins, health, the icon


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def concrete(route: str, ids: dict[str, str]) -> str:
    """'jobs/<int:pk>/' -> '/jobs/7/'; admin's regex routes get the user's id or a plain word."""
    import re

    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: ids.get(m.group(1), "1"), route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: ids.get(m.group(1), "1"), path)
    path = path.replace("^", "").replace("$", "").replace("\\Z", "").replace("\\", "")
    return "/" + path


def test_anonymous_users_are_refused_everywhere_but_login_and_health(client, alice, team_a, dataset_a):
    job = submit_pretrain(alice, team_a, dataset_a)
    ids = {"pk": str(job.pk), "object_id": str(alice.pk), "app_label": "lab", "model_name": "job",
           "content_type_id": "1", "uidb64": "x", "token": "x", "url": "x"}
    routes = list(walk(get_resolver().url_patterns))
    assert len(routes) > 20
    checked = 0
    for route in routes:
        url = concrete(route, ids)
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if url in PUBLIC:
                assert response.status_code in (200, 405), (method, url, response.status_code)
                continue
            if url.startswith("/api/"):
                assert response.status_code in (401, 405), (method, url, response.status_code)
                continue
            if url.startswith("/admin/"):  # the admin sends anonymous users to its own login
                assert response.status_code in (302, 404, 405) and (
                    response.status_code != 302 or "login" in response.url), (method, url)
                continue
            assert response.status_code in (302, 405), (method, url, response.status_code)
            if response.status_code == 302:
                assert response.url.startswith("/login/"), (method, url, response.url)
            checked += 1
    assert checked > 10
