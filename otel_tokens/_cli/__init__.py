"""The `otel-tokens` command's ledger commands and the tables it prints."""
