"""The load generator's request mix (services/loadgen.py), without a server."""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter

from services.loadgen import Mix, Requests, Tenant, _split

PATCH = re.compile(
    rb"PATCH /orders/([0-9a-f-]+)/status HTTP/1.1\r\n.*Bearer (\S+)\r\n.*\r\n\r\n(.*)", re.S
)


def tenants(restaurants: int = 3, orders: int = 4) -> list[Tenant]:
    return [
        Tenant(uuid.uuid4(), f"staff-{n}", f"token-{n}", [uuid.uuid4() for _ in range(orders)])
        for n in range(restaurants)
    ]


def parsed(raw: bytes) -> tuple[str, str, dict[str, object]]:
    match = PATCH.match(raw)
    assert match is not None, raw
    return match.group(1).decode(), match.group(2).decode(), json.loads(match.group(3))


def test_round_robin_walks_every_order_with_the_versions_it_will_have() -> None:
    people = tenants()
    requests = Requests("h:1", people, Mix(), random.Random(1))
    owner = {str(o): t.token for t in people for o in t.orders}
    sent = [parsed(requests.next()) for _ in range(12 * 4)]
    first_pass = sent[:12]
    assert len({order for order, _, _ in first_pass}) == 12
    assert all(body == {"status": "accepted", "expected_version": 1} for _, _, body in first_pass)
    assert all(token == owner[order] for order, token, _ in sent)
    walk = [body for order, _, body in sent if order == first_pass[0][0]]
    assert [b["status"] for b in walk] == ["accepted", "preparing", "ready", "completed"]
    assert [b["expected_version"] for b in walk] == [1, 2, 3, 4]


def test_stale_and_cross_tenant_shares() -> None:
    people = tenants(restaurants=4, orders=50)
    requests = Requests("h:1", people, Mix(stale=0.2, cross_tenant=0.3), random.Random(7))
    owner = {str(o): t.token for t in people for o in t.orders}
    kinds: Counter[str] = Counter()
    for _ in range(4000):
        order, token, body = parsed(requests.next())
        if token != owner[order]:
            kinds["cross"] += 1
        elif body["status"] == "accepted" and body["expected_version"] != 1:
            kinds["stale"] += 1
    assert 0.26 < kinds["cross"] / 4000 < 0.34
    assert kinds["stale"] > 0


def test_zipf_skew_makes_the_first_orders_hot() -> None:
    requests = Requests("h:1", tenants(restaurants=2, orders=500), Mix(skew=1.2), random.Random(3))
    hits = Counter(parsed(requests.next())[0] for _ in range(5000))
    ranked = [plan.order_id for plan in requests.orders]
    assert hits[ranked[0]] > 10 * max(hits[ranked[-1]], 1)
    assert hits.most_common(1)[0][0] in ranked[:3]


def test_a_conflict_resets_the_plan_to_the_servers_version() -> None:
    people = tenants(restaurants=1, orders=1)
    requests = Requests("h:1", people, Mix(), random.Random(1))
    order = str(people[0].orders[0])
    requests.next()
    requests.learn(
        409,
        json.dumps(
            {"instance": f"/orders/{order}/status", "current_status": "ready", "current_version": 7}
        ).encode(),
    )
    assert parsed(requests.next())[2] == {"status": "completed", "expected_version": 7}


def test_shares_of_several_processes_split_the_orders_and_keep_the_restaurants() -> None:
    people = tenants(restaurants=3, orders=10)
    shares = _split(people, 3)
    dealt = [o for share in shares for t in share for o in t.orders]
    assert sorted(dealt) == sorted(o for t in people for o in t.orders)
    assert all([t.token for t in share] == [t.token for t in people] for share in shares)
