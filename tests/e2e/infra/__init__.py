"""Real end-to-end test infrastructure: images built from scratch, SSH test hosts with their
own Docker engine, a tiny generated model. Used by tests/e2e/conftest.py and by
`python -m tests.e2e.infra build` (CI pre-build)."""
