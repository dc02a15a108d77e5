-- wrk script for scripts/bench: every request is `PURGE <path>` with no body, the form of
-- ngx_cache_purge and the WordPress purge plugins, for the module's `pagespeed_purge_method`
-- location and for its `return 204` reference.
wrk.method = "PURGE"
