"""A real JWKS endpoint on loopback for the RS256/ES256 tests: keys generated per test run, served
over HTTP by a thread, requests counted. Plus signing helpers for tokens those keys verify."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://auth.example.test/auth/v1"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        encoder = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        jwk: dict[str, Any] = encoder.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header}
        )


def rsa_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", private)


def ec_key(kid: str | None = None) -> SigningKey:
    return SigningKey(
        kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1())
    )


def claims(
    sub: str,
    role: str = "authenticated",
    *,
    audience: str = "authenticated",
    issuer: str | None = ISSUER,
    ttl: int = 600,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "role": role, "aud": audience, "iat": now, "exp": now + ttl}
    if issuer is not None:
        body["iss"] = issuer
    return {**body, **extra}


HANG_BOUND_S = 60.0
"""A hanging endpoint answers after this at the latest (a bound on a hang, for clean shutdown)."""


@dataclass
class JwksServer:
    url: str
    keys: list[dict[str, Any]]
    requests: list[str] = field(default_factory=list)
    hanging: bool = False
    """Requests wait for `release` (an endpoint that accepts connections and never answers)."""
    failing: bool = False
    """Requests get a 503 (an endpoint that is down behind its load balancer)."""
    release: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    """Requests being held by `hanging` right now."""


@contextmanager
def jwks_server(
    *keys: SigningKey, extra: list[dict[str, Any]] | None = None
) -> Iterator[JwksServer]:
    """Serves {"keys": [...]} at /.well-known/jwks.json on 127.0.0.1 (a free port)."""
    published = [key.public_jwk() for key in keys] + list(extra or [])
    state = JwksServer("", published)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.hanging:
                state.in_flight += 1
                try:
                    state.release.wait(HANG_BOUND_S)
                finally:
                    state.in_flight -= 1
            body = json.dumps({"keys": state.keys}).encode()
            status = 200 if self.path == "/.well-known/jwks.json" else 404
            if state.failing:
                status, body = 503, b"{}"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
