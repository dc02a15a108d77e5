-- wrk script for scripts/bench: every request is a POST with a small JSON body, the same
-- for the purge API and for its `return 204` reference.
wrk.method = "POST"
wrk.body = '{"url": "/x"}'
wrk.headers["Content-Type"] = "application/json"
