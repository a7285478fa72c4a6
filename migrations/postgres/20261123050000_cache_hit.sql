-- Answers served from the response cache (the backend was not called).
ALTER TABLE logs ADD COLUMN cache_hit BOOLEAN NOT NULL DEFAULT FALSE;
