-- outbox.sql: the outbox table in the shape of Debezium's outbox event router.
-- Idempotent. Services insert one row per event in the same transaction as their business data;
-- outboxd publishes each inserted row to Kafka. Deleting the row in the same transaction (insert
-- then delete) keeps the table empty and still publishes the event.
CREATE TABLE IF NOT EXISTS public.outbox (
    id            uuid         NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb,
    headers       jsonb
);

COMMENT ON TABLE public.outbox IS
    'events published to Kafka by outboxd: topic outbox.event.<aggregatetype>, key aggregateid';
