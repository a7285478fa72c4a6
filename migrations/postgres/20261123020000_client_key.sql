-- Which client API key (its configured id, never the key) made the request.
ALTER TABLE logs ADD COLUMN client_key TEXT;
