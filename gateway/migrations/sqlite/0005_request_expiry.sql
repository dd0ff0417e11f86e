-- Request ids expire and the oldest go first when the table is full: both find entries by
-- their creation time.
CREATE INDEX gateway_requests_created ON gateway_requests (created_at_ms, request_id);
