"""selfhost's no-leak hybrid router: a service in its own container, behind the TLS gateway.

It sends each OpenAI-compatible request to the local vLLM or to a configured closed API, under a
policy file (router.policy), after a gate that fails closed (router.decide), and writes a
hash-chained audit line per decision (router.audit). The `toolkit` CLI imports only router.policy
(render checks the site's policy with the router's own schema) and router.audit (`selfhost route
audit`), both pydantic/YAML/stdlib only; the rest needs the optional
extra `selfhost[router]`. See router/README.md.
"""
