"""Fault-injection suite (`make chaos`, issue 3): a steady load of commands over HTTP while the
worker, the broker and PostgreSQL are killed and restarted round after round, then a checker that
proves no accepted command was lost, duplicated or applied out of order.

It runs on its own Kafka broker and PostgreSQL (deploy/local with ORDERSTATUS_LOCAL_DIR under
.local/chaos/), so a developer's running stack is never touched."""
