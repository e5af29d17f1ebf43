-- The tables the example rules (rules.yaml) keep in sync with Clerk.
-- Portable: SQLite 3.24 or newer and PostgreSQL. Apply it once, e.g.
--   sqlite3 app.db < examples/sql-sync/schema.sql
--   psql "$APP_DATABASE_URL" -f examples/sql-sync/schema.sql

CREATE TABLE IF NOT EXISTS users (
    clerk_id   TEXT PRIMARY KEY,  -- Clerk's user id (user_...)
    email      TEXT,              -- the PRIMARY email address, NULL for phone-only users
    first_name TEXT,
    last_name  TEXT,
    updated_at BIGINT             -- Clerk's updated_at (ms): an older event never wins
);

CREATE TABLE IF NOT EXISTS memberships (
    org_id  TEXT NOT NULL,        -- Clerk's organization id (org_...)
    user_id TEXT NOT NULL,        -- Clerk's user id (user_...)
    role    TEXT NOT NULL,        -- org:admin, org:member, ...
    PRIMARY KEY (org_id, user_id)
);
