# Convenience targets; each is the same command the README documents.
.PHONY: model run test bench lint

model:            ## fetch + verify the embedded model into models/
	./scripts/fetch-model.sh

run: model        ## the main job on sample-data with the embedded model
	./scripts/run-sample.sh

test: model       ## the full test suite
	./scripts/test.sh

bench: model      ## throughput numbers (no timing asserts anywhere)
	cargo run -- bench

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
