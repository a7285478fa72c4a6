-- In-flight rows, starring, replays and raw bodies (dashboard and debugging).
ALTER TABLE logs ADD COLUMN in_flight BOOLEAN NOT NULL DEFAULT FALSE; -- while the request runs (written after it ran a second)
ALTER TABLE logs ADD COLUMN starred BOOLEAN NOT NULL DEFAULT FALSE;   -- starred rows are kept by retention
ALTER TABLE logs ADD COLUMN replay_of BIGINT;                         -- the logs.id this request replayed
ALTER TABLE logs ADD COLUMN request_body TEXT;                        -- with database.store_bodies: the client's body,
ALTER TABLE logs ADD COLUMN backend_request TEXT;                     -- what went to the backend,
ALTER TABLE logs ADD COLUMN backend_response TEXT;                    -- and what came back, as sent
CREATE INDEX IF NOT EXISTS idx_logs_replay_of ON logs (replay_of) WHERE replay_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_logs_starred ON logs (id) WHERE starred = TRUE;
CREATE INDEX IF NOT EXISTS idx_logs_in_flight ON logs (id) WHERE in_flight = TRUE;
