"""The policy gate: every outbound message passes it, and it records why."""
