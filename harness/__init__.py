"""The dev-only test harness shared by tests/ and bench/: real processes on free ports (model
server, gateway, worker, Redis, the whole `fdl up` stack), polling with deadlines, tiny test
models, test data, Prometheus samples. Not a production package: no image ships it."""
