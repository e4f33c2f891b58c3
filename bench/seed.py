"""Pending orders and staff memberships written straight into the database as the owner, so that
every benchmark request is an applied change and both systems read the same rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg

from bench import queries
from services.command_api.auth import mint_token
from services.core.settings import Settings
from services.core.tenancy import grant_staff


@dataclass
class Tenant:
    restaurant_id: uuid.UUID
    staff_sub: str
    token: str
    orders: list[uuid.UUID] = field(default_factory=list)


def seed(settings: Settings, restaurants: int, orders_per_restaurant: int) -> list[Tenant]:
    """`restaurants` restaurants, each with one staff member (a membership and a token narrowed
    to that restaurant) and `orders_per_restaurant` pending orders at version 1."""
    tenants = []
    for _ in range(restaurants):
        restaurant = uuid.uuid4()
        sub = f"bench-staff-{restaurant.hex[:8]}"
        token = mint_token(settings, sub=sub, restaurant_ids=[restaurant])
        orders = [uuid.uuid4() for _ in range(orders_per_restaurant)]
        tenants.append(Tenant(restaurant, sub, token, orders))
    with psycopg.connect(settings.admin_url) as conn:
        for tenant in tenants:
            grant_staff(conn, user_id=tenant.staff_sub, restaurant_id=tenant.restaurant_id)
            conn.execute(
                queries.INSERT_PENDING_ORDERS,
                {"restaurant_id": tenant.restaurant_id, "ids": tenant.orders},
            )
        conn.commit()
    return tenants
