-- publication.sql: the publication outboxd streams from. Idempotent.
-- Only inserts are published: updates and deletes of outbox rows are never events.
-- outboxd can create it itself (postgres.publication.create = true) when its role owns the table;
-- run this as the table owner otherwise.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outboxd') THEN
        CREATE PUBLICATION outboxd FOR TABLE public.outbox WITH (publish = 'insert');
    ELSIF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                      WHERE pubname = 'outboxd' AND schemaname = 'public'
                        AND tablename = 'outbox') THEN
        ALTER PUBLICATION outboxd ADD TABLE public.outbox;
    END IF;
END
$$;
