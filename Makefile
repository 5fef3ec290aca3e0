# The two commands of the README's quick start: `make run` and `make test`.
.PHONY: run test stack-up stack-down bench

# Whole pipeline locally: broker, ClickHouse, registry, producer and consumer on 127.0.0.1.
run:
	scripts/run

# Every test: starts the local stack, builds everything, runs the Rust test suite and the deployment checks.
test:
	scripts/test

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down
