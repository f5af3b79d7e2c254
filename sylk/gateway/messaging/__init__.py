"""Messaging as SylkServer's gateway does it: stored history, the journal devices sync from, read marks and
removals, public keys and push device tokens (docs/messaging.md)."""
