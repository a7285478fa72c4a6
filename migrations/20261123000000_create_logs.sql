-- One row per client request, written after its response ended.
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp DATETIME NOT NULL,          -- request received, UTC, 'YYYY-MM-DD HH:MM:SS.SSS'
    endpoint TEXT NOT NULL,               -- '/api/chat', '/api/generate', ...
    method TEXT NOT NULL,
    model TEXT,                           -- the name the client used
    backend_model TEXT,                   -- the name the backend was asked for
    prompt TEXT,                          -- chat: the messages as JSON; generate: the prompt
    response TEXT,                        -- the assembled answer (partial if cut off)
    thinking TEXT,
    tool_calls TEXT,                      -- JSON array, when the answer called tools
    status_code INTEGER,
    latency_ms INTEGER,                   -- request received -> response ended
    stream BOOLEAN,
    backend_type TEXT,
    done_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT                            -- NULL when the request succeeded
);
CREATE INDEX IF NOT EXISTS idx_logs_timestamp ON logs (timestamp);
CREATE INDEX IF NOT EXISTS idx_logs_model ON logs (model);
