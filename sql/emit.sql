-- emit.sql: table-less outbox. outbox_emit() writes an event as a transactional logical message
-- (prefix 'outbox') instead of a row: nothing to insert, nothing to delete, nothing to vacuum.
-- outboxd routes it exactly like a row when postgres.messages = true. Idempotent.
-- The message is part of the calling transaction: it is published only if that transaction
-- commits. Returns the LSN of the message.
CREATE OR REPLACE FUNCTION public.outbox_emit(
    aggregatetype text,
    aggregateid   text,
    type          text,
    payload       jsonb,
    headers       jsonb DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE sql
VOLATILE
AS $$
    SELECT pg_logical_emit_message(
        true,
        'outbox',
        (jsonb_strip_nulls(jsonb_build_object(
             'id', gen_random_uuid(),
             'aggregatetype', aggregatetype,
             'aggregateid', aggregateid,
             'type', type,
             'headers', headers))
         || jsonb_build_object('payload', payload))::text)
$$;

COMMENT ON FUNCTION public.outbox_emit(text, text, text, jsonb, jsonb) IS
    'emit an outbox event as a transactional logical message (outboxd: postgres.messages = true)';
