"""The embedded default: what lets the project run with no weights and no network (the tiny
backbone's language and instruction data)."""
