-- Per-request metrics computed by the stream recorder. Existing rows keep NULLs.
ALTER TABLE logs ADD COLUMN request_id TEXT;                -- also sent to the client as X-Request-Id
ALTER TABLE logs ADD COLUMN ttft_ms DOUBLE PRECISION;       -- request received -> first token sent
ALTER TABLE logs ADD COLUMN prompt_eval_ms DOUBLE PRECISION; -- backend's prompt processing time
ALTER TABLE logs ADD COLUMN eval_ms DOUBLE PRECISION;       -- backend's generation time
ALTER TABLE logs ADD COLUMN tokens_per_second DOUBLE PRECISION; -- completion_tokens / eval time
ALTER TABLE logs ADD COLUMN tokens_estimated BOOLEAN NOT NULL DEFAULT FALSE; -- the backend reported no counts
ALTER TABLE logs ADD COLUMN request_bytes BIGINT;
ALTER TABLE logs ADD COLUMN response_bytes BIGINT;          -- bytes sent to the client
ALTER TABLE logs ADD COLUMN client_addr TEXT;
ALTER TABLE logs ADD COLUMN cost DOUBLE PRECISION;          -- from config `pricing`, NULL when unpriced
CREATE INDEX IF NOT EXISTS idx_logs_request_id ON logs (request_id);
