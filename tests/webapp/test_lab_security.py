"""Site-wide defences: the Content-Security-Policy and its nonces, log-in throttling, hashed and expiring API
tokens, and a health check that tells anonymous callers nothing about the database driver."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from lab_helpers import submit_pretrain

from webapp.lab.models import ApiToken, hash_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


class TestContentSecurityPolicy:
    @pytest.mark.parametrize("url", ["/jobs/", "/leaderboard/", "/datasets/", "/jobs/new/pretrain/", "job"])
    def test_every_inline_block_carries_the_requests_nonce(self, client_a, alice, team_a, dataset_a, url):
        if url == "job":
            url = f"/jobs/{submit_pretrain(alice, team_a, dataset_a).pk}/"  # active: it has a polling script
        response = client_a.get(url)
        policy = response["Content-Security-Policy"]
        nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
        assert "script-src 'self' 'nonce-" in policy and "frame-ancestors 'none'" in policy
        page = response.content.decode()
        blocks = re.findall(r"<(script|style)([^>]*)>", page)
        assert blocks and all(f'nonce="{nonce}"' in attrs for _, attrs in blocks), blocks
        assert not re.search(r"\son[a-z]+=", page), "an inline event handler, which the policy blocks"

    def test_the_nonce_changes_with_every_request(self, client_a):
        first, second = (client_a.get("/jobs/")["Content-Security-Policy"] for _ in range(2))
        assert first != second


class TestLoginThrottling:
    def test_repeated_failures_lock_the_name_even_for_the_right_password(self, client, alice, settings):
        settings.LAB_LOGIN_FAILURES = 3
        for _ in range(3):
            assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
        locked = client.post("/login/", {"username": "alice", "password": "pw-alice"})
        assert locked.status_code == 429 and b"too many failed log-ins" in locked.content
        assert "_auth_user_id" not in client.session
        cache.clear()  # the lock's window has passed
        assert client.post("/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302

    def test_behind_the_proxy_one_clients_failures_do_not_lock_out_another(self, client, alice, bob, settings):
        settings.LAB_LOGIN_FAILURES = 3
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        for _ in range(3):  # every request reaches the site from the proxy's own address
            client.post("/login/", {"username": "mallory", "password": "x"}, HTTP_X_FORWARDED_FOR="10.0.0.66",
                        HTTP_X_FORWARDED_PROTO="https", secure=True)
        other = client.post("/login/", {"username": "bob", "password": "pw-bob"}, secure=True,
                            HTTP_X_FORWARDED_FOR="1.2.3.4, 10.0.0.7", HTTP_X_FORWARDED_PROTO="https")
        assert other.status_code == 302
        forged = client.post("/login/", {"username": "alice", "password": "pw-alice"}, secure=True,
                             HTTP_X_FORWARDED_FOR="10.0.0.7, 10.0.0.66", HTTP_X_FORWARDED_PROTO="https")
        assert forged.status_code == 429  # the proxy's entry is the last one, whatever the client put first

    def test_a_success_before_the_limit_logs_in(self, client, alice, settings):
        settings.LAB_LOGIN_FAILURES = 3
        client.post("/login/", {"username": "alice", "password": "wrong"})
        assert client.post("/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302


class TestTokens:
    def test_only_a_hash_is_stored_and_the_key_works(self, client, alice):
        token, key = ApiToken.issue(alice, name="laptop")
        token.refresh_from_db()
        assert token.key_hash == hash_key(key) and key not in str(token.__dict__.values())
        assert token.prefix == key[:8]
        assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200

    def test_an_expired_token_is_refused(self, client, alice):
        _, key = ApiToken.issue(alice, expires_at=timezone.now() - timedelta(seconds=1))
        assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
        _, later = ApiToken.issue(alice, expires_at=timezone.now() + timedelta(days=1))
        assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Token {later}").status_code == 200

    def test_create_token_prints_the_key_once(self, client, alice):
        out = StringIO()
        call_command("create_token", "alice", "--days", "30", stdout=out)
        key = out.getvalue().strip()
        token = ApiToken.objects.get(key_hash=hash_key(key))
        assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
        assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_healthz_says_error_without_the_drivers_message(client, monkeypatch):
    def broken():
        raise RuntimeError("could not connect to server at db.internal:5432 as user lab")

    monkeypatch.setattr(connection, "cursor", broken)
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json() == {"status": "error", "database": "error"}
