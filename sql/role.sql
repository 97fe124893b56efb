-- role.sql: a least-privilege login role for outboxd. Idempotent; run as a superuser.
-- REPLICATION lets it open a replication connection and create its slot; it is not a superuser
-- and cannot read or change anything but the outbox table. Set its password afterwards, e.g.
--   \password outboxd
-- and give outboxd the password through a file: postgres.conninfo = @/run/secrets/outboxd-conninfo
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outboxd') THEN
        CREATE ROLE outboxd LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;
    ELSE
        ALTER ROLE outboxd LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

-- Catalog checks (table columns, publication membership) and reading the slot state.
GRANT USAGE ON SCHEMA public TO outboxd;
GRANT SELECT ON public.outbox TO outboxd;
GRANT pg_read_all_stats TO outboxd;
