"""Prices per model and what a `Usage` costs, from the bundled table or a price file."""
