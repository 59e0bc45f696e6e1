# The two commands of README.md. Each sets up what it needs first (scripts/setup.sh).
.PHONY: app test lint setup

app:
	scripts/setup.sh
	.venv/bin/python app.py

test:
	scripts/setup.sh --dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
