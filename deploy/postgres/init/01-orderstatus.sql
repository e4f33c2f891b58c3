-- Role, database and extensions of Order Status. Idempotent; run by psql as a
-- superuser: by deploy/local/postgres.sh on every start, and by the postgres
-- image's entrypoint (docker-entrypoint-initdb.d) on first start.
SELECT 'CREATE ROLE orderstatus LOGIN PASSWORD ''orderstatus'' CREATEDB CREATEROLE'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderstatus') \gexec

-- The services' login role: migration 0002 grants it what it may do (and would create it
-- without a password); here it gets the local stacks' development password.
SELECT 'CREATE ROLE orderstatus_app LOGIN NOINHERIT PASSWORD ''orderstatus_app'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderstatus_app') \gexec

SELECT 'CREATE DATABASE orderstatus OWNER orderstatus ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orderstatus') \gexec

\connect orderstatus
SET client_min_messages = warning;
-- Needs shared_preload_libraries = 'pg_stat_statements' to return rows.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
