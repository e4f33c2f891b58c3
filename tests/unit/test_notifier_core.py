"""The notifier's pure core: signatures (also checked by the Standard Webhooks reference library),
the retry schedule, and the address rules against server-side request forgery."""

from __future__ import annotations

import ipaddress
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.addresses import RefusedURL, first_allowed, parse_allowed, refusal, target_of
from services.notifier.schedule import (
    JITTER,
    AttemptResult,
    Verdict,
    decide,
    parse_schedule,
    result_of_status,
    retry_after_s,
)
from services.notifier.signing import InvalidSignature, new_secret, signed_headers, verify

NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


@given(body=st.text(max_size=200).map(str.encode))
def test_reference_library_verifies_our_signature(body: bytes) -> None:
    secret = new_secret()
    headers = signed_headers([secret], "evt-1", int(time.time()), body)
    Webhook(secret).verify(body, headers, json_parse=False)
    assert verify(secret, headers, body, time.time()) == "evt-1"


def test_during_rotation_both_secrets_sign_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"id":"x"}'
    headers = signed_headers([new, old], "evt-2", int(time.time()), body)
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers, json_parse=False)
        verify(secret, headers, body, time.time())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers, json_parse=False)


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    # The documented algorithm, computed independently of services.notifier.signing.
    import base64
    import hashlib
    import hmac

    key = b"0123456789abcdef0123"
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = signed_headers([secret], "msg_1", 1700000000, b"{}")
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest())
    assert headers["webhook-signature"] == "v1," + expected.decode()


def test_tampered_body_stale_timestamp_and_missing_headers_are_rejected() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "evt", int(time.time()), b"body")
    with pytest.raises(InvalidSignature):
        verify(secret, headers, b"body!", time.time())
    with pytest.raises(InvalidSignature):
        verify(secret, headers, b"body", time.time() + 600)
    with pytest.raises(InvalidSignature):
        verify(secret, {"webhook-id": "evt"}, b"body", time.time())


def test_retries_follow_the_schedule_with_bounded_jitter_then_give_up() -> None:
    schedule = parse_schedule("5,300,1800")
    rng = random.Random(7)
    for attempt, delay in enumerate(schedule, start=1):
        decision = decide(AttemptResult.HTTP_ERROR, attempt, schedule, NOW, rng)
        assert decision.verdict is Verdict.RETRY and decision.next_attempt_at is not None
        waited = (decision.next_attempt_at - NOW).total_seconds()
        assert delay * (1 - JITTER) <= waited <= delay * (1 + JITTER)
    assert decide(AttemptResult.TIMEOUT, 4, schedule, NOW, rng).verdict is Verdict.FAILED


def test_retry_after_lengthens_but_is_bounded_by_the_longest_delay() -> None:
    schedule = (1.0, 10.0)
    rng = random.Random(1)
    longer = decide(AttemptResult.HTTP_ERROR, 1, schedule, NOW, rng, retry_after=8)
    assert longer.next_attempt_at == NOW + timedelta(seconds=8)
    capped = decide(AttemptResult.HTTP_ERROR, 1, schedule, NOW, rng, retry_after=10_000)
    assert capped.next_attempt_at == NOW + timedelta(seconds=10)
    assert retry_after_s("120", NOW) == 120
    assert retry_after_s("Tue, 01 Dec 2026 20:01:00 GMT", NOW) == 60
    assert retry_after_s("soon", NOW) is None


def test_status_codes() -> None:
    assert result_of_status(200) is AttemptResult.SUCCESS
    assert result_of_status(204) is AttemptResult.SUCCESS
    assert result_of_status(301) is AttemptResult.HTTP_ERROR
    assert result_of_status(410) is AttemptResult.GONE
    assert decide(AttemptResult.GONE, 1, (1.0,), NOW, random.Random()).verdict is Verdict.DISABLE
    assert decide(AttemptResult.SUCCESS, 9, (), NOW, random.Random()).verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "192.0.2.1",
    ],
)
def test_private_loopback_link_local_cgnat_and_reserved_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), ()) is not None


def test_public_addresses_pass_and_allowed_cidrs_open_exceptions() -> None:
    assert refusal(ipaddress.ip_address("93.184.216.34"), ()) is None
    assert refusal(ipaddress.ip_address("2606:2800:220:1::1"), ()) is None
    allowed = parse_allowed("127.0.0.0/8, 10.0.0.0/8")
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("192.168.0.1"), allowed) is not None
    # One bad answer among the host's addresses refuses the host.
    mixed = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(RefusedURL):
        first_allowed(mixed, ())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "http:///x",
        "gopher://a",
        "http://" + "a" * 64 + ".example.com/",  # a label too long for IDNA (the fuzzer's 500)
        "http://a..b/",
        "http://a\udcff/",
    ],
)
def test_only_plain_http_and_https_urls(url: str) -> None:
    with pytest.raises(RefusedURL):
        target_of(url)


def test_target_of_keeps_path_and_query_and_default_ports() -> None:
    target = target_of("https://hooks.example.com/in?x=1")
    assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/in?x=1")
    assert target_of("http://[::1]:8080").port == 8080


def test_doctor_judges_webhook_delays_and_disabled_endpoints() -> None:
    from services.ops.verdicts import Verdict
    from services.ops.webhook_checks import judge_webhooks

    quiet = {"endpoints": 2, "disabled": 0, "oldest_s": 3.0, "undelivered": 4, "retrying": 0}
    assert judge_webhooks(quiet).verdict is Verdict.OK
    assert judge_webhooks({**quiet, "oldest_s": 1000.0}).verdict is Verdict.WARN
    assert judge_webhooks({**quiet, "disabled": 1}).verdict is Verdict.WARN
    assert judge_webhooks({**quiet, "endpoints": 0}).verdict is Verdict.INFO


def test_answer_heads_are_parsed_and_garbage_refused() -> None:
    from services.notifier.http import ProtocolError, _parse_head

    status, version, headers = _parse_head(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n"
    )
    assert (status, version, headers["retry-after"]) == (429, "HTTP/1.1", "30")
    for garbage in (
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200\r\nx\r\n\r\n",
    ):
        with pytest.raises(ProtocolError):
            _parse_head(garbage)


def test_urls_with_blanks_or_control_characters_are_refused() -> None:
    for url in ("http://a.example/x y", "http://a.example/x\r\nHost: b", "http://a.example/\x7f"):
        with pytest.raises(RefusedURL):
            target_of(url)
