"""What the services share to reach the world: settings from the environment, Kafka client
configurations and records, PostgreSQL migrations and named queries, acting for a caller, JSON logs,
record signing. The domain (services/core) imports none of it."""
