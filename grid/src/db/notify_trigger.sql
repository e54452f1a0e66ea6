-- hydracache_notify(): tells HydraCache's PgInvalidationListener which cache
-- tags a write to a table makes stale.
--
-- Attach it to a table (hydracache::db::notify_trigger_sql writes these):
--
--   CREATE TRIGGER users_hydracache_notify
--       AFTER INSERT OR UPDATE OR DELETE ON users
--       FOR EACH ROW EXECUTE FUNCTION hydracache_notify('hydracache_invalidation', 'user', 'id', 'users');
--   CREATE TRIGGER users_hydracache_notify_truncate
--       AFTER TRUNCATE ON users
--       FOR EACH STATEMENT EXECUTE FUNCTION hydracache_notify('hydracache_invalidation', 'user', 'id', 'users');
--
-- Arguments: channel, entity name, id column, collection tag (optional).
-- For each written row it sends, on the channel,
--
--   {"tags": ["<entity>:<id>", "<collection>"]}
--
-- with the old id's tag too when an UPDATE changes the id or the row is
-- deleted. A TRUNCATE sends {"flush": true}: the rows it removed cannot be
-- named. Postgres delivers a NOTIFY when the transaction commits, never on
-- rollback, and sends identical payloads of one transaction once.
CREATE OR REPLACE FUNCTION hydracache_notify() RETURNS trigger
LANGUAGE plpgsql AS $hydracache$
DECLARE
    channel    text := TG_ARGV[0];
    entity     text := TG_ARGV[1];
    id_column  text := TG_ARGV[2];
    collection text := TG_ARGV[3];
    tags       jsonb := '[]'::jsonb;
    new_id     text;
    old_id     text;
BEGIN
    IF TG_NARGS < 3 THEN
        RAISE EXCEPTION 'hydracache_notify(channel, entity, id_column [, collection]) needs at least 3 arguments, got %', TG_NARGS;
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify(channel, '{"flush": true}');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_id := to_jsonb(NEW) ->> id_column;
        tags := tags || to_jsonb(entity || ':' || new_id);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_id := to_jsonb(OLD) ->> id_column;
        IF old_id IS DISTINCT FROM new_id THEN
            tags := tags || to_jsonb(entity || ':' || old_id);
        END IF;
    END IF;
    IF collection IS NOT NULL AND collection <> '' THEN
        tags := tags || to_jsonb(collection);
    END IF;
    PERFORM pg_notify(channel, jsonb_build_object('tags', tags)::text);
    RETURN NULL;
END;
$hydracache$;
