"""The Stripe SDK (stripe-python) through the gateway, as finance-agent.

The agent's Aegis token stands where the Stripe secret key goes
(`StripeClient(token)`); the gateway judges the call, drops the token and
sends the real key upstream. Two ways to reach it:

- proxy mode: base `http://api.stripe.com`, the gateway as HTTP proxy
  (`StripeClient(proxy=...)`, or `stripe.proxy` for the module-level API);
- base-URL mode: base `http://127.0.0.1:<stripe listener>`, no proxy.
"""

from __future__ import annotations

import socket
import time

import pytest

import sdks
from harness import assert_forwarded_with_real_key

stripe = sdks.require("stripe")

AGENT = "finance-agent"
MODES = [pytest.param("proxy", marks=pytest.mark.proxy), pytest.param("base_url", marks=pytest.mark.base_url)]


def make_client(gateway, mode: str, key: str | None = None, **kw):
    key = gateway.token(AGENT) if key is None else key
    if mode == "proxy":
        return stripe.StripeClient(
            key, base_addresses={"api": gateway.tool_url("stripe")}, proxy=gateway.proxy_url, **kw
        )
    return stripe.StripeClient(key, base_addresses={"api": gateway.base_url("stripe")}, **kw)


@pytest.mark.parametrize("mode", MODES)
def test_allowed_payment_returns_the_payment_intent(gateway, mode):
    client = make_client(gateway, mode)
    mark = gateway.mark("stripe")

    intent = client.v1.payment_intents.create(params={"amount": 1200, "currency": "usd"})

    assert isinstance(intent, stripe.PaymentIntent)
    assert intent.object == "payment_intent"
    assert intent.amount == 1200
    assert intent.currency == "usd"
    assert intent.id.startswith("pi_")
    seen = gateway.seen_since("stripe", mark)
    assert_forwarded_with_real_key("stripe", seen, gateway.token(AGENT))
    assert seen[0]["method"] == "POST" and seen[0]["path"] == "/v1/payment_intents"
    assert "amount=1200" in seen[0]["body"]


@pytest.mark.parametrize("mode", MODES)
def test_allowed_customer_lookup(gateway, mode):
    client = make_client(gateway, mode)
    mark = gateway.mark("stripe")

    customer = client.v1.customers.retrieve("cus_42")

    assert isinstance(customer, stripe.Customer)
    assert customer.id == "cus_42"
    seen = gateway.seen_since("stripe", mark)
    assert_forwarded_with_real_key("stripe", seen, gateway.token(AGENT))
    assert seen[0]["method"] == "GET" and seen[0]["path"] == "/v1/customers/cus_42"


@pytest.mark.parametrize("mode", MODES)
def test_payment_above_the_limit_asks_for_approval(gateway, mode):
    client = make_client(gateway, mode)
    mark = gateway.mark("stripe")

    with pytest.raises(stripe.PermissionError) as caught:
        client.v1.payment_intents.create(params={"amount": 7500, "currency": "usd"})

    err = caught.value
    assert err.http_status == 403
    message = err.user_message or str(err)
    assert "approval" in message.lower(), message
    assert "`amount` must be a number <= 5000" in message, message
    assert gateway.seen_since("stripe", mark) == [], "a call that needs approval reached the upstream"


@pytest.mark.parametrize("mode", MODES)
def test_refund_is_not_in_the_policy(gateway, mode):
    client = make_client(gateway, mode)
    mark = gateway.mark("stripe")

    with pytest.raises(stripe.PermissionError) as caught:
        client.v1.refunds.create(params={"payment_intent": "pi_123"})

    message = caught.value.user_message or str(caught.value)
    assert "matches no action" in message, message
    assert "/v1/refunds" in message, message
    assert gateway.seen_since("stripe", mark) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_real_stripe_key_is_not_an_agent_token(gateway, mode):
    client = make_client(gateway, mode, key="sk_test_123")
    mark = gateway.mark("stripe")

    with pytest.raises(stripe.PermissionError) as caught:
        client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})

    message = caught.value.user_message or str(caught.value)
    assert "invalid agent token" in message, message
    assert "sk_test_123" not in message, "the deny reason echoes the credential"
    assert gateway.seen_since("stripe", mark) == []


@pytest.mark.parametrize("mode", MODES)
def test_the_next_allowed_call_after_a_deny_succeeds(gateway, mode):
    client = make_client(gateway, mode)
    with pytest.raises(stripe.PermissionError):
        client.v1.payment_intents.create(params={"amount": 9000, "currency": "usd"})
    with pytest.raises(stripe.PermissionError):
        client.v1.refunds.create(params={"payment_intent": "pi_123"})
    mark = gateway.mark("stripe")

    intent = client.v1.payment_intents.create(params={"amount": 4999, "currency": "eur"})

    assert intent.amount == 4999 and intent.currency == "eur"
    assert_forwarded_with_real_key("stripe", gateway.seen_since("stripe", mark), gateway.token(AGENT))


@pytest.mark.proxy
def test_module_level_api_with_stripe_proxy(gateway, monkeypatch):
    """The module-level style: `stripe.api_key`, `stripe.api_base` and
    `stripe.proxy`, with `PaymentIntent.create`."""
    monkeypatch.setattr(stripe, "api_key", gateway.token(AGENT))
    monkeypatch.setattr(stripe, "api_base", gateway.tool_url("stripe"))
    monkeypatch.setattr(stripe, "proxy", gateway.proxy_url)
    # The default HTTP client is made on first use with the proxy of that
    # moment; start from none and leave none behind.
    monkeypatch.setattr(stripe, "default_http_client", None)
    monkeypatch.setattr(stripe, "_default_proxy", None)
    mark = gateway.mark("stripe")

    intent = stripe.PaymentIntent.create(amount=2500, currency="usd")

    assert intent.amount == 2500
    assert_forwarded_with_real_key("stripe", gateway.seen_since("stripe", mark), gateway.token(AGENT))
    with pytest.raises(stripe.PermissionError) as caught:
        stripe.PaymentIntent.create(amount=6000, currency="usd")
    assert "approval" in (caught.value.user_message or str(caught.value)).lower()


@pytest.mark.proxy
def test_https_through_the_proxy_fails_fast(gateway):
    """An `https://` base through the proxy makes the SDK open a CONNECT
    tunnel; the gateway refuses it, and the caller gets an error at once
    rather than a hang."""
    client = stripe.StripeClient(
        gateway.token(AGENT),
        base_addresses={"api": "https://api.stripe.com"},
        proxy=gateway.proxy_url,
        max_network_retries=0,
    )
    mark = gateway.mark("stripe")
    started = time.monotonic()

    with pytest.raises(stripe.APIConnectionError):
        client.v1.payment_intents.create(params={"amount": 1200, "currency": "usd"})

    assert time.monotonic() - started < 10
    assert gateway.seen_since("stripe", mark) == []


@pytest.mark.proxy
def test_raw_connect_is_refused_with_a_reason(gateway):
    """What a CONNECT gets, on the wire: 403 and a body that tells the
    agent to send plain http to the gateway."""
    with socket.create_connection(("127.0.0.1", gateway.ports["proxy"]), timeout=10) as s:
        s.sendall(b"CONNECT api.stripe.com:443 HTTP/1.1\r\nHost: api.stripe.com:443\r\n\r\n")
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk

    assert status_line.split(" ")[1] == "403", status_line
    text = body.decode("utf-8", errors="replace")
    assert "plain http" in text.lower(), text
