"""Adapters that make Finetuner 0.4.1 and pre-0.30 docarray work on today's stack."""
