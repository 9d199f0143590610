"""The rtdetr-deploy actions, each with run(spec)."""
